/* A consumer of an installed gatednorm (scripts/install_check.sh builds it through pkg-config
 * and through find_package): the header found is the library's (the loaded library's version
 * equals the header's macros) and a call through the installed library runs. */
#include <gatednorm.h>

#include <stdio.h>

int main(void) {
    const uint32_t header = ((uint32_t)GATEDNORM_VERSION_MAJOR << 16) | ((uint32_t)GATEDNORM_VERSION_MINOR << 8) |
                            (uint32_t)GATEDNORM_VERSION_PATCH;
    gatednorm_rmsnorm_gated_params p;
    if (gatednorm_version() != header) {
        printf("FAIL: library version 0x%x, header 0x%x\n", (unsigned)gatednorm_version(), (unsigned)header);
        return 1;
    }
    if (gatednorm_rmsnorm_gated_params_init(&p, sizeof p) != GATEDNORM_STATUS_SUCCESS || p.struct_size != sizeof p) {
        printf("FAIL: params_init: %s\n", gatednorm_last_error());
        return 1;
    }
    printf("%s\n", gatednorm_build_info());
    return 0;
}
