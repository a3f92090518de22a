/* Leaves children behind that never stop writing: `writers N MS` forks N children that write
 * 1 MiB at a time to stdout without end, and exits itself after MS milliseconds. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int children = argc > 1 ? atoi(argv[1]) : 8;
    int ms = argc > 2 ? atoi(argv[2]) : 100;
    static char chunk[1 << 20];
    memset(chunk, 'w', sizeof chunk);
    for (int i = 0; i < children; i++) {
        if (fork() == 0) {
            for (;;) {
                if (write(1, chunk, sizeof chunk) < 0) _exit(1);
            }
        }
    }
    struct timespec wait = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&wait, 0);
    return 0;
}
