// Small host-side helpers the GPU launchers share: make a tensor's device current for the
// duration of a call, and turn runtime errors into statuses.
#pragma once
#include "backend.h"
#include "port.h"

namespace gn {

// Converts a runtime error into a status + message ("<what>: <runtime text>").
inline gatednorm_status runtime_fail(hipError_t err, const char *what) {
    (void)hipGetLastError();  // clear the sticky-free error so the next call starts clean
    return fail(GATEDNORM_STATUS_DEVICE_ERROR, "%s: %s", what, hipGetErrorString(err));
}

// A launch's error as a status: one refused by gn_launch_fits (or by the runtime) as larger
// than one launch takes is UNSUPPORTED naming `arg`, the argument whose size set the grid
// (nothing was launched); any other a device error.
inline gatednorm_status launch_fail(hipError_t err, const char *op, const char *arg) {
    if (err == hipErrorInvalidConfiguration) {
        (void)hipGetLastError();
        return fail(GATEDNORM_STATUS_UNSUPPORTED,
                    "%s: too large for one %s launch on this GPU (AMD: grid x block threads under 2^32 in each dimension; "
                    "CUDA: 65535 blocks in y and z); split the call",
                    arg, op);
    }
    return runtime_fail(err, op);
}

inline gatednorm_status check_launch(const char *op) {
    const hipError_t err = hipGetLastError();
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, op);
}

// Switches the current device only when it differs, and restores it on exit.
class DeviceGuard {
  public:
    explicit DeviceGuard(int device_id) {
        hipError_t err = hipGetDevice(&previous_);
        if (err == hipSuccess && previous_ != device_id) {
            err = hipSetDevice(device_id);
            switched_ = err == hipSuccess;
        }
        if (err != hipSuccess) status_ = runtime_fail(err, "set device");
    }
    ~DeviceGuard() {
        if (switched_) (void)hipSetDevice(previous_);
    }
    DeviceGuard(const DeviceGuard &) = delete;
    DeviceGuard &operator=(const DeviceGuard &) = delete;
    bool ok() const { return status_ == GATEDNORM_STATUS_SUCCESS; }
    gatednorm_status status() const { return status_; }

  private:
    int previous_ = 0;
    bool switched_ = false;
    gatednorm_status status_ = GATEDNORM_STATUS_SUCCESS;
};

}  // namespace gn
