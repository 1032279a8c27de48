"""A stand-in for fla-core's gated norms (tests/fake_gpu/run_bench.py): the torch stand-in's
eager composition behind FLA's names, and an autotuner whose cache keys rows by 64k like
FLA's, so the bench's FLA peers (as a process gets it, and re-tuned per shape) can be
exercised without a GPU."""
