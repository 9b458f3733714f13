/*
 * writev_probe: what one small frame costs the sender when a connection's queue is written
 * as an iovec of shared frames (tidewire's conn_flush) versus copied into one contiguous
 * buffer first. Loopback TCP; a child process on the other CPU reads and discards.
 *
 *   cc -O2 -o writev_probe writev_probe.c && taskset -c 0 ./writev_probe [FRAME_BYTES]
 *
 * Prints, for K frames per write (1, 16, 128, 512), the sender's CPU (user + system) per
 * frame both ways. Evidence for docs/benchmarks.md's profile section, not a test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
    size_t fsz = argc > 1 ? (size_t)atoi(argv[1]) : 190;
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t al = sizeof a;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) ||
        getsockname(ls, (struct sockaddr *)&a, &al)) {
        perror("listen");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) { /* the reader, on the other CPU */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(1, &set);
        sched_setaffinity(0, sizeof set, &set);
        int c = accept(ls, NULL, NULL);
        static char buf[1 << 20];
        while (read(c, buf, sizeof buf) > 0)
            ;
        _exit(0);
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        perror("connect");
        return 1;
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *frame = malloc(fsz), *flat = malloc(512 * fsz);
    memset(frame, 'x', fsz);
    struct iovec iov[512];
    const int ks[] = {1, 16, 128, 512};
    printf("frame %zu bytes: sender CPU per frame (user + system)\n", fsz);
    printf("%6s %16s %20s\n", "K", "iovec of K", "copied, 1 segment");
    for (int i = 0; i < 4; i++) {
        int k = ks[i];
        long frames = 4000000 / k * k;
        for (int j = 0; j < k; j++)
            iov[j] = (struct iovec){frame, fsz};
        double t0 = cpu_s();
        for (long n = 0; n < frames; n += k) {
            ssize_t w = writev(s, iov, k);
            if (w != (ssize_t)(k * fsz)) { /* partial: finish it plainly */
                size_t done = w > 0 ? (size_t)w : 0;
                while (done < k * fsz) {
                    ssize_t x = write(s, flat, k * fsz - done);
                    if (x > 0) done += (size_t)x;
                }
            }
        }
        double t1 = cpu_s();
        for (long n = 0; n < frames; n += k) {
            for (int j = 0; j < k; j++)
                memcpy(flat + (size_t)j * fsz, frame, fsz);
            size_t done = 0;
            while (done < k * fsz) {
                ssize_t x = write(s, flat + done, k * fsz - done);
                if (x > 0) done += (size_t)x;
            }
        }
        double t2 = cpu_s();
        printf("%6d %13.0f ns %17.0f ns\n", k, (t1 - t0) * 1e9 / (double)frames,
               (t2 - t1) * 1e9 / (double)frames);
    }
    close(s);
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    return 0;
}
