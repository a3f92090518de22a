/* The guest kernel's boot system call (guest ABI BOOT_SYSCALL), made by a program: the VMM
 * starts the kernel's boot through it once, before the program exists, and a program must
 * get ENOSYS from it like any unknown number, not a second boot. */
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    for (int i = 0; i < 2; i++) {
        long result = syscall(0xB007CA11L);
        printf("boot call %s\n", result == -1 && errno == ENOSYS ? "ENOSYS" : "answered");
    }
    return 0;
}
