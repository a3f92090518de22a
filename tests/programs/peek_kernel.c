/* Reads a byte of the guest kernel's code (it is loaded at 1 MiB in cvm's VM) and prints it:
 * where the kernel is closed to the program, this is SIGSEGV. */
#include <stdio.h>

int main(void) {
    printf("reading the kernel\n");
    fflush(stdout);
    printf("kernel byte: %d\n", *(volatile unsigned char *)0x100000);
    return 0;
}
