"""issue #15: `import gatednorm` and an fp32 call do not load ml_dtypes (~1 s of import);
a bf16 name or array does."""
import subprocess
import sys

CODE = r"""
import sys
import numpy as np
import gatednorm
assert "ml_dtypes" not in sys.modules, "import gatednorm loaded ml_dtypes"
x = np.ones((2, 8), np.float32)
gatednorm.rmsnorm_gated(x, None, np.ones(8, np.float32))
assert "ml_dtypes" not in sys.modules, "an fp32 call loaded ml_dtypes"
import ml_dtypes
xb = x.astype(ml_dtypes.bfloat16)
assert gatednorm.rmsnorm_gated(xb, None, np.ones(8, np.float32)).dtype == xb.dtype
print("ok")
"""


def test_import_does_not_load_ml_dtypes():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


CODE_DLPACK = r"""
import sys
import numpy as np
import gatednorm
assert "gatednorm._dlpack" not in sys.modules, "import gatednorm loaded the DLPack module"
x = np.ones((2, 8), np.float32)
gatednorm.rmsnorm_gated(x, None, np.ones(8, np.float32))
assert "gatednorm._dlpack" not in sys.modules, "a numpy call loaded the DLPack module"
d = gatednorm.DeviceArray.from_numpy(x, device="cpu")  # (numpy reads host memory only)
np.from_dlpack(d)  # an export loads it
assert "gatednorm._dlpack" in sys.modules
print("ok")
"""


def test_import_does_not_load_dlpack():
    """The DLPack module parses its own cffi cdef (and, in an installed package whose binding
    is prebuilt, is what would import cffi's C parser): it loads at the first DLPack argument
    or export, not at import or a numpy call."""
    r = subprocess.run([sys.executable, "-c", CODE_DLPACK], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
