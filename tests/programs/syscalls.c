/* Asks for system calls the container's filter decides on and prints each answer:
 * io_uring_setup (refused: its operations bypass the filter) and a call newer than the
 * profile (ENOSYS, so a C library falls back). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *name(int error) {
    return error == EPERM ? "EPERM" : error == ENOSYS ? "ENOSYS" : error == 0 ? "ok" : "other";
}

int main(void) {
    long uring = syscall(425, 1, 0);
    printf("io_uring_setup %s\n", uring < 0 ? name(errno) : "ok");
    long newer = syscall(451, 0, 0, 0, 0);
    printf("syscall_451 %s\n", newer < 0 ? name(errno) : "ok");
    return 0;
}
