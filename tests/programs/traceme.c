/* Asks to be traced by its parent (PTRACE_TRACEME), then does what makes a tracee stop and
 * wait for its tracer: takes a signal, then executes a program (itself again). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "again") == 0) {
        printf("exec after PTRACE_TRACEME ok\n");
        return 0;
    }
    long traced = ptrace(PTRACE_TRACEME, 0, 0, 0);
    printf("PTRACE_TRACEME returned %ld\n", traced);
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "stop") == 0) {
        raise(SIGSTOP);
        printf("SIGSTOP after PTRACE_TRACEME did not stop the run\n");
        return 0;
    }
    raise(SIGWINCH);
    printf("signal after PTRACE_TRACEME ok\n");
    fflush(stdout);
    char *again[] = {argv[0], "again", NULL};
    execv("/proc/self/exe", again);
    perror("execv");
    return 1;
}
