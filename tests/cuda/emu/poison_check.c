/* poison_check.c: proves the emulator's device-memory poisoning is active in an
 * AddressSanitizer build (tests/cuda/emu/run runs it first there and expects it to die): copies
 * through the runtime work, then the host reads a device buffer directly, which a GPU would
 * fault on and ASan must report as a use-after-poison. Exit 0 means the poisoning is off. */
#include <cuda_runtime.h>
#include <stdio.h>

int main(void)
{
    float h[16] = {0}, *d = NULL;
    for (int i = 0; i < 16; i++) h[i] = (float)i;
    if (cudaMalloc((void **)&d, sizeof h) != cudaSuccess) return 2;
    /* The legitimate paths: each opens only the device side for the copy. */
    if (cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice) != cudaSuccess) return 2;
    if (cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) != cudaSuccess) return 2;
    if (h[3] != 3.0f) return 2;
    /* The bug: a host read of device memory. */
    volatile float x = d[3];
    printf("poison_check: read %g from device memory without a report: poisoning is off\n", (double)x);
    cudaFree(d);
    return 0;
}
