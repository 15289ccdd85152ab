/* vmtool: the few system calls the guest workload needs that busybox has no
 * applet for. Built static on the host (cc -static) and put in the initramfs.
 *
 *   vmtool now                 monotonic clock in microseconds
 *   vmtool unlinked PATH       open, unlink, then write, ftruncate, fstat,
 *                              pread and pwrite through the open descriptor
 *   vmtool xattr PATH          set, get, list, replace and remove user.* xattrs
 *   vmtool xattr-none PATH     setxattr must fail with EOPNOTSUPP (9P2000.u)
 *   vmtool lock PATH L|u       fcntl F_GETLK, F_SETLK, a child's F_GETLK and
 *                              F_SETLK against the parent's lock, F_UNLCK
 *
 * Each command exits 0 when every check held, else prints what failed on
 * stderr and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...)                                                          \
    do {                                                                   \
        fprintf(stderr, "vmtool: " __VA_ARGS__);                           \
        fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno));      \
        return 1;                                                          \
    } while (0)

static int cmd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("%lld\n", (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000);
    return 0;
}

/* fstat (Tgetattr, or Tstat over 9P2000.u, on the open fid) and reads both
 * check the sizes. */
static int cmd_unlinked(const char *path)
{
    static char buf[65536], back[65536];
    struct stat st;
    ssize_t n;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        FAIL("open %s", path);
    if (unlink(path) != 0)
        FAIL("unlink %s", path);
    if (access(path, F_OK) == 0 || errno != ENOENT)
        FAIL("%s still reachable after unlink", path);
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (char)(i * 7 + 3);
    if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
        FAIL("write after unlink");
    if (fstat(fd, &st) != 0)
        FAIL("fstat after write");
    if (st.st_size != (off_t)sizeof(buf)) {
        errno = 0;
        FAIL("fstat after write: size %lld", (long long)st.st_size);
    }
    if (ftruncate(fd, 1000) != 0)
        FAIL("ftruncate after unlink");
    if (fstat(fd, &st) != 0)
        FAIL("fstat after ftruncate");
    if (st.st_size != 1000) {
        errno = 0;
        FAIL("fstat after ftruncate: size %lld", (long long)st.st_size);
    }
    if ((n = pread(fd, back, sizeof(back), 0)) != 1000)
        FAIL("pread after ftruncate to 1000 gave %zd bytes", n);
    if (ftruncate(fd, 5000) != 0)
        FAIL("ftruncate (extend) after unlink");
    memset(back, 0x55, sizeof(back));
    if ((n = pread(fd, back, sizeof(back), 0)) != 5000)
        FAIL("pread after ftruncate to 5000 gave %zd bytes", n);
    if (memcmp(back, buf, 1000) != 0)
        FAIL("data before the cut changed");
    for (int i = 1000; i < 5000; i++)
        if (back[i] != 0)
            FAIL("byte %d past the cut is %d, not 0", i, back[i]);
    if (pwrite(fd, "tail", 4, 5000) != 4)
        FAIL("pwrite after ftruncate");
    if ((n = pread(fd, back, sizeof(back), 0)) != 5004 || memcmp(back + 5000, "tail", 4) != 0)
        FAIL("pread after pwrite gave %zd bytes", n);
    if (close(fd) != 0)
        FAIL("close");
    return 0;
}

static int cmd_xattr(const char *path)
{
    char val[256], list[4096];
    ssize_t n;
    if (setxattr(path, "user.vmtest", "one", 3, XATTR_CREATE) != 0)
        FAIL("setxattr create");
    /* No empty value: the Linux client removes an xattr by a Txattrcreate
     * of size 0, so servers (QEMU's first) take size 0 as "remove". */
    if (setxattr(path, "user.other", "x", 1, 0) != 0)
        FAIL("setxattr second name");
    n = getxattr(path, "user.vmtest", val, sizeof(val));
    if (n != 3 || memcmp(val, "one", 3) != 0)
        FAIL("getxattr gave %zd bytes", n);
    if (getxattr(path, "user.vmtest", NULL, 0) != 3)
        FAIL("getxattr size probe");
    if (setxattr(path, "user.vmtest", "two!", 4, XATTR_REPLACE) != 0)
        FAIL("setxattr replace");
    n = getxattr(path, "user.vmtest", val, sizeof(val));
    if (n != 4 || memcmp(val, "two!", 4) != 0)
        FAIL("getxattr after replace gave %zd bytes", n);
    n = listxattr(path, list, sizeof(list));
    if (n < 0)
        FAIL("listxattr");
    int seen = 0;
    for (char *p = list; p < list + n; p += strlen(p) + 1) {
        if (strcmp(p, "user.vmtest") == 0 || strcmp(p, "user.other") == 0)
            seen++;
        if (strncmp(p, "user.virtfs.", 12) == 0) {
            errno = 0;
            FAIL("listxattr shows the server's own %s", p);
        }
    }
    if (seen != 2) {
        errno = 0;
        FAIL("listxattr lists %d of the 2 names", seen);
    }
    if (removexattr(path, "user.vmtest") != 0)
        FAIL("removexattr");
    if (getxattr(path, "user.vmtest", val, sizeof(val)) >= 0 || errno != ENODATA)
        FAIL("getxattr after remove");
    if (removexattr(path, "user.other") != 0)
        FAIL("removexattr second name");
    n = listxattr(path, list, sizeof(list));
    for (char *p = list; n > 0 && p < list + n; p += strlen(p) + 1)
        if (strncmp(p, "user.", 5) == 0) {
            errno = 0;
            FAIL("listxattr still lists %s after removal", p);
        }
    return 0;
}

static int cmd_xattr_none(const char *path)
{
    if (setxattr(path, "user.vmtest", "one", 3, 0) == 0) {
        errno = 0;
        FAIL("setxattr succeeded on a 9P2000.u mount");
    }
    if (errno != EOPNOTSUPP)
        FAIL("setxattr on a 9P2000.u mount: want EOPNOTSUPP");
    return 0;
}

/* fcntl(fd, cmd) on bytes [0, len) with a fresh struct flock of `type`. */
static int lk(int fd, int cmd, short type, off_t len, struct flock *fl)
{
    memset(fl, 0, sizeof(*fl));
    fl->l_type = type;
    fl->l_whence = SEEK_SET;
    fl->l_start = 0;
    fl->l_len = len;
    return fcntl(fd, cmd, fl);
}

/* Over 9P2000.u the kernel client sends no lock messages: its ->lock only
 * flushes the page cache and returns 0 (F_GETLK leaves the request as it
 * was), so there only F_SETLK and F_UNLCK are checked. */
static int cmd_lock(const char *path, int dotl)
{
    struct flock fl;
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0)
        FAIL("open %s", path);
    if (!dotl) {
        if (lk(fd, F_SETLK, F_WRLCK, 100, &fl) != 0)
            FAIL("F_SETLK F_WRLCK");
        if (lk(fd, F_SETLK, F_UNLCK, 100, &fl) != 0)
            FAIL("F_SETLK F_UNLCK");
        return close(fd) == 0 ? 0 : 1;
    }
    /* No lock anywhere: the client asks the server (Tgetlock). */
    if (lk(fd, F_GETLK, F_WRLCK, 100, &fl) != 0)
        FAIL("F_GETLK on an unlocked file");
    if (fl.l_type != F_UNLCK) {
        errno = 0;
        FAIL("F_GETLK on an unlocked file gave type %d", fl.l_type);
    }
    if (lk(fd, F_SETLK, F_WRLCK, 100, &fl) != 0)
        FAIL("F_SETLK F_WRLCK");
    pid_t pid = fork();
    if (pid == 0) {
        int cfd = open(path, O_RDWR);
        struct flock cl;
        if (cfd < 0)
            _exit(10);
        if (lk(cfd, F_GETLK, F_RDLCK, 100, &cl) != 0)
            _exit(11);
        if (cl.l_type != F_WRLCK || cl.l_pid != getppid())
            _exit(12);
        if (lk(cfd, F_SETLK, F_RDLCK, 10, &cl) == 0 || (errno != EAGAIN && errno != EACCES))
            _exit(13);
        _exit(0);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        FAIL("fork/wait");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = 0;
        FAIL("child's view of the lock: check %d failed", WEXITSTATUS(status));
    }
    if (lk(fd, F_SETLK, F_UNLCK, 100, &fl) != 0)
        FAIL("F_SETLK F_UNLCK");
    if (close(fd) != 0)
        FAIL("close");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "now") == 0)
        return cmd_now();
    int dotl = argc == 4 && strcmp(argv[3], "L") == 0;
    if (argc == 3 && strcmp(argv[1], "unlinked") == 0)
        return cmd_unlinked(argv[2]);
    if (argc == 3 && strcmp(argv[1], "xattr") == 0)
        return cmd_xattr(argv[2]);
    if (argc == 3 && strcmp(argv[1], "xattr-none") == 0)
        return cmd_xattr_none(argv[2]);
    if (argc == 4 && strcmp(argv[1], "lock") == 0)
        return cmd_lock(argv[2], dotl);
    fprintf(stderr, "usage: vmtool now | unlinked|xattr|xattr-none PATH | lock PATH L|u\n");
    return 2;
}
