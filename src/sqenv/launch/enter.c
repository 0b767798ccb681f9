/*
 * sqenv-enter: run a program in a private mount namespace where the
 * environment's image is visible at a fixed path and over the install prefix.
 *
 * Why not bubblewrap: bwrap always forks and its parent neither forwards
 * SIGTERM/SIGINT nor keeps the pid (bubblewrap#369), so `scancel`, `kill` and
 * Ctrl-C would not reach the program. This helper unshares in-process and
 * execs: the program keeps the launcher's pid, signals, exit code and TTY.
 * It is not setuid: it uses an unprivileged user namespace mapping the caller
 * to itself, so files keep their owners and the program runs without caps.
 *
 * usage: sqenv-enter [-i IMAGE]... [-t IDLE] [-r RUNTIME] [-s STAGE]
 *                    [-l LOWER]... [-w] [-u UPPER -W WORK] [-p PREFIX]
 *                    [-m PATH] [-a ARGV0] -- PROG [ARGS...]
 *   -i IMAGE   a squashfs image layer of an install: mounted once per node,
 *              user and image under the runtime directory (or reused if
 *              mounted already, see mount.c's part below), pinned by an open
 *              file for the program's lifetime, then used like -l
 *   -t IDLE    seconds a mount stays after its last user (default 60)
 *   -r RUNTIME the user's runtime directory (default /tmp/sqenv-UID)
 *   -s STAGE   where `sqenv stage` puts node-local copies (default /tmp)
 *   -l LOWER   directory to show at the fixed path (several: a read-only
 *              overlay, the FIRST one given is the top layer; -i and -l
 *              share that order)
 *   -w         bind the (single) LOWER read-write (used while building)
 *   -u UPPER   with -W: a writable overlay of the LOWERs, changes go to
 *   -W WORK    UPPER (overlayfs' upperdir and workdir; used by updates)
 *   -p PREFIX  also show the environment over PREFIX (may repeat)
 *   -m PATH    show it at PATH instead of the fixed mount path (`sqenv wrap
 *              --mask`: a tree at its original place)
 *   -a ARGV0   argv[0] for PROG (default PROG)
 *   -L SCRIPT  the launcher script that runs us (default PREFIX/launcher; a
 *              node-local copy made by `sqenv stage`)
 *   -C LEVEL   refuse to run unless this CPU has x86-64 LEVEL (x86-64-v3 ...),
 *              in one line (see cpu.h); `--check-cpu LEVEL` only checks
 *   PROG       absolute path, or a name looked up in PATH
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SQENV_MOUNT_PATH
#define SQENV_MOUNT_PATH "/mnt/sqenv"
#endif
#define MAX_LAYERS 64
static const char *mount_path = SQENV_MOUNT_PATH;
#define MAX_PREFIXES 8
#define EXIT_ENTER 125

static void die(const char *fmt, ...)
{
    va_list ap;
    int err = errno;
    fputs("sqenv: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (err)
        fprintf(stderr, ": %s", strerror(err));
    fputs("\n", stderr);
    exit(EXIT_ENTER);
}

#include "cpu.h"
#include "launch.h"

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return; /* old kernels have no setgroups file */
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        die("cannot write %s (are unprivileged user namespaces enabled? run `sqenv doctor`)", path);
    close(fd);
}

static void enter_user_namespace(void)
{
    char map[64];
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
        die("cannot create a user and mount namespace (run `sqenv doctor`)");
    write_file("/proc/self/setgroups", "deny");
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    write_file("/proc/self/uid_map", map);
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    write_file("/proc/self/gid_map", map);
    /* Receive the host's later mounts, never send ours back. */
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0)
        die("cannot make mounts private");
}

static void bind(const char *src, const char *dst, unsigned long extra)
{
    if (mount(src, dst, NULL, MS_BIND | MS_REC | extra, NULL) != 0)
        die("cannot bind %s on %s", src, dst);
}

/* Remount a bind read-only, keeping the flags the kernel locked on it
 * (nosuid, nodev, ... of the FUSE mount): dropping them would be refused. */
static void make_readonly(const char *path)
{
    struct statvfs sv;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY;
    if (statvfs(path, &sv) != 0)
        die("cannot stat %s", path);
    if (sv.f_flag & ST_NOSUID)
        flags |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV)
        flags |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC)
        flags |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME)
        flags |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME)
        flags |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME)
        flags |= MS_RELATIME;
    if (mount(NULL, path, NULL, flags, NULL) != 0)
        die("cannot make %s read-only", path);
}

/*
 * Make the fixed mount path exist without touching the host: cover its
 * parent with a tmpfs and bring the parent's entries back as binds and
 * symlinks, so the rest of the host stays visible there.
 */
static void make_mount_point(const char *path)
{
    char parent[PATH_MAX], child[PATH_MAX], src[PATH_MAX], link[PATH_MAX];
    const char *name;
    struct stat st;
    struct dirent *de;
    DIR *dir;
    int pfd;

    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return;
    snprintf(parent, sizeof parent, "%s", path);
    *strrchr(parent, '/') = '\0';
    name = path + strlen(parent) + 1;
    if (parent[0] == '\0')
        die("the mount path %s needs a parent directory", path);

    pfd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0)
        die("cannot open %s", parent);
    dir = opendir(parent);
    if (!dir)
        die("cannot list %s", parent);
    if (mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0)
        die("cannot mount a tmpfs on %s", parent);
    while ((de = readdir(dir)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, name))
            continue;
        snprintf(child, sizeof child, "%s/%s", parent, de->d_name);
        snprintf(src, sizeof src, "/proc/self/fd/%d/%s", pfd, de->d_name);
        if (fstatat(pfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlinkat(pfd, de->d_name, link, sizeof link - 1);
            if (n >= 0) {
                link[n] = '\0';
                if (symlink(link, child) != 0)
                    die("cannot recreate %s", child);
            }
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (mkdir(child, 0755) != 0)
                die("cannot recreate %s", child);
        } else {
            int fd = open(child, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0)
                die("cannot recreate %s", child);
            close(fd);
        }
        bind(src, child, 0);
    }
    closedir(dir);
    close(pfd);
    if (mkdir(path, 0755) != 0)
        die("cannot create %s", path);
}

/* overlayfs lowerdir= option: the top layer first, as given */
static void overlay_options(char *opts, size_t size, char **layers, int n, const char *upper, const char *work)
{
    /* user.overlay.* xattrs: whiteouts and opaque directories made by an
     * update (in its user namespace) must be honoured by later mounts. */
    size_t len = (size_t)snprintf(opts, size, "userxattr,lowerdir=");
    for (int i = 0; i < n; i++) {
        int w = snprintf(opts + len, size - len, "%s%s", layers[i], i + 1 < n ? ":" : "");
        if (w < 0 || (size_t)w >= size - len)
            die("too many layers");
        len += (size_t)w;
    }
    if (upper) {
        int w = snprintf(opts + len, size - len, ",upperdir=%s,workdir=%s", upper, work);
        if (w < 0 || (size_t)w >= size - len)
            die("layer paths too long");
    }
}

static void mount_layers(char **layers, int n, int writable, const char *upper, const char *work)
{
    char opts[8192];
    if (n == 1 && !upper) {
        bind(layers[0], mount_path, 0);
        if (!writable)
            make_readonly(mount_path);
        return;
    }
    /* A fresh FUSE mount's root has no valid attributes until someone stats
     * it, and overlayfs would copy its placeholder mode (0000): stat first. */
    for (int i = 0; i < n; i++) {
        struct stat st;
        (void)stat(layers[i], &st);
    }
    overlay_options(opts, sizeof opts, layers, n, upper, work);
    if (mount("sqenv", mount_path, "overlay", upper ? 0 : MS_RDONLY, opts) != 0)
        die("cannot stack the image layers (overlayfs in user namespaces needs Linux >= 5.11)");
}

/* ------------------------------------------------------------------------
 * Image mounts: one squashfuse_ll per node, user and image, shared by all
 * launches, under the user's runtime directory (default /tmp/sqenv-UID).
 *
 * /tmp is writable by every user of the node, so nothing found there is
 * trusted by its name: the runtime directory is opened without following a
 * symlink, must be a directory owned by the caller (made 0700), and only
 * then is anything inside it used. Another user cannot create anything in
 * it, so an entry inside that is a live FUSE mount is the caller's own.
 * This runs on every launch, warm or cold: a few syscalls, no fork.
 * ------------------------------------------------------------------------ */

#define FUSE_MAGIC 0x65735546
int serve_main(int argc, char **argv); /* serve.c */
#define IMAGE_MARKER ".sqenv-image"
#define MOUNT_TIMEOUT_MS 10000

static void die_hint(const char *hint, const char *fmt, ...)
{
    va_list ap;
    fputs("sqenv: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\nhint: %s\n", hint);
    exit(EXIT_ENTER);
}

/* "name (uid N)" from /etc/passwd: no NSS, this binary is static. */
static const char *owner_name(uid_t uid, char *buf, size_t size)
{
    char line[512];
    FILE *f = fopen("/etc/passwd", "re");
    snprintf(buf, size, "uid %u", (unsigned)uid);
    while (f && fgets(line, sizeof line, f)) {
        char *name = strtok(line, ":"), *pw = strtok(NULL, ":"), *id = strtok(NULL, ":");
        if (name && pw && id && strtoul(id, NULL, 10) == uid) {
            snprintf(buf, size, "%s (uid %u)", name, (unsigned)uid);
            break;
        }
    }
    if (f)
        fclose(f);
    return buf;
}

static char planted[PATH_MAX + 200]; /* why a runtime directory was refused */

/* Open an existing directory entry of `dirfd` as a directory we own and make
 * it 0700. -1: it does not exist; -2: something else is there (a symlink, a
 * file, a FIFO, another user's directory), described in `planted`. */
static int open_own_dir(int dirfd, const char *name, const char *shown)
{
    struct stat st;
    char who[96];
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            return -1;
        if ((errno == ENOTDIR || errno == ELOOP) && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            snprintf(planted, sizeof planted, "`%s` is not a directory but a %s of %s: refusing to use it", shown,
                     S_ISLNK(st.st_mode) ? "symlink" : S_ISFIFO(st.st_mode) ? "FIFO" : "file",
                     owner_name(st.st_uid, who, sizeof who));
            return -2;
        }
        die("cannot open the runtime directory %s", shown);
    }
    if (fstat(fd, &st) != 0)
        die("cannot stat %s", shown);
    if (st.st_uid != getuid()) {
        snprintf(planted, sizeof planted, "`%s` belongs to %s, not to you: refusing to use it", shown,
                 owner_name(st.st_uid, who, sizeof who));
        close(fd);
        return -2;
    }
    if ((st.st_mode & 07777) != 0700 && fchmod(fd, 0700) != 0)
        die("cannot make %s private", shown);
    return fd;
}

/* Open (or create) the directory `path` as ours; -2 as open_own_dir. */
static int own_dir_at(char *path, int create_parents)
{
    char parent[PATH_MAX];
    const char *name;
    int pfd, fd;

    snprintf(parent, sizeof parent, "%s", path);
    *strrchr(parent, '/') = '\0';
    name = path + strlen(parent) + 1;
    if (!*name) {
        errno = 0;
        die("the runtime directory cannot be /");
    }
    pfd = open(*parent ? parent : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0 && errno == ENOENT && create_parents) {
        for (char *c = parent + 1;; c++) {
            if (*c == '/' || *c == '\0') {
                char keep = *c;
                *c = '\0';
                if (mkdir(parent, 0700) != 0 && errno != EEXIST)
                    die("cannot create %s", parent);
                *c = keep;
                if (!keep)
                    break;
            }
        }
        pfd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
    }
    if (pfd < 0)
        die("cannot open %s", *parent ? parent : "/");
    fd = open_own_dir(pfd, name, path);
    if (fd == -1) {
        if (mkdirat(pfd, name, 0700) != 0 && errno != EEXIST)
            die_hint("set SQENV_RUNTIME_DIR to a writable directory on local storage",
                     "cannot create the runtime directory %s: %s", path, strerror(errno));
        fd = open_own_dir(pfd, name, path);
        if (fd == -1)
            die("cannot open the runtime directory %s", path);
    }
    close(pfd);
    return fd;
}

/*
 * The runtime directory as an open, verified fd; created when missing:
 * SQENV_RUNTIME_DIR / the config's runtime_dir, else /tmp/sqenv-UID. If
 * another user planted something at /tmp/sqenv-UID, DIR/sqenv-UID in the
 * first of $XDG_RUNTIME_DIR (made by the system) or $TMPDIR (a per-job
 * directory, where Slurm makes one) that is the user's own and closed to
 * others is used instead; otherwise a clear refusal. Planted content is
 * never used.
 */
static int runtime_dir(const char *configured, char *path, size_t size)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int fd;

    if (configured && *configured) {
        if (configured[0] != '/') {
            errno = 0;
            die("the runtime directory must be an absolute path: %s", configured);
        }
        snprintf(path, size, "%s", configured);
        while (strlen(path) > 1 && path[strlen(path) - 1] == '/')
            path[strlen(path) - 1] = '\0';
        fd = own_dir_at(path, 1);
    } else {
        snprintf(path, size, "/tmp/sqenv-%u", (unsigned)getuid());
        fd = own_dir_at(path, 0);
        /* a private directory of the user's own, made by the system (XDG) or by
         * Slurm for the job (a per-job TMPDIR), instead of the planted one */
        const char *fallbacks[] = {xdg, getenv("TMPDIR")};
        for (int i = 0; fd == -2 && i < 2; i++) {
            struct stat st;
            const char *dir = fallbacks[i];
            if (dir && dir[0] == '/' && stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() &&
                !(st.st_mode & 022)) {
                snprintf(path, size, "%s/sqenv-%u", dir, (unsigned)getuid());
                fd = own_dir_at(path, 0);
            }
        }
    }
    if (fd == -2)
        die_hint("ask its owner or an admin to remove it, or set SQENV_RUNTIME_DIR to a directory of yours on "
                 "local storage",
                 "%s", planted);
    return fd;
}

/* "vN-ID.sqfs" -> "ID" */
static void image_id(const char *image, char *id, size_t size)
{
    const char *base = strrchr(image, '/');
    const char *dash;
    size_t len;
    base = base ? base + 1 : image;
    dash = strchr(base, '-');
    base = dash ? dash + 1 : base;
    len = strlen(base);
    if (len > 5 && !strcmp(base + len - 5, ".sqfs"))
        len -= 5;
    if (len == 0 || len >= size || memchr(base, '/', len) || (len <= 2 && base[0] == '.')) {
        errno = 0;
        die("not an image name: %s", image);
    }
    memcpy(id, base, len);
    id[len] = '\0';
}

/* Open the marker file of a live mount of `id`, or return -1 (not mounted,
 * or a mount whose daemon died: errno ENOTCONN). */
static int open_marker(int rtfd, const char *id)
{
    struct statfs sf;
    int mfd = openat(rtfd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int fd;
    if (mfd < 0)
        return -1;
    if (fstatfs(mfd, &sf) != 0 || sf.f_type != FUSE_MAGIC) {
        close(mfd);
        errno = ENOENT;
        return -1;
    }
    fd = openat(mfd, IMAGE_MARKER, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    close(mfd);
    return fd;
}

/* Move a descriptor to a high number, kept across exec: the program keeps
 * the mount alive while it runs, and no descriptor a caller passes in
 * (3, 4, ... PMI_FD) is taken or closed. */
static int move_high(int fd)
{
    struct rlimit rl;
    long floor = 1000;
    int high;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur - 64 < floor)
        floor = (long)rl.rlim_cur - 64;
    if (floor < 10)
        floor = 10;
    high = fcntl(fd, F_DUPFD, (int)floor);
    if (high < 0)
        die("cannot keep the image open");
    close(fd);
    return high;
}

static int in_path(const char *prog)
{
    const char *path = getenv("PATH");
    char full[PATH_MAX];
    if (!path)
        return 0;
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        snprintf(full, sizeof full, "%.*s/%s", (int)len, len ? path : ".", prog);
        if (access(full, X_OK) == 0)
            return 1;
        path += len + (end ? 1 : 0);
        if (!end)
            break;
    }
    return 0;
}

static void reset_signals(void)
{
    sigset_t none;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    /* libfuse installs its SIGINT/SIGTERM/SIGHUP handlers only where the
     * disposition is the default, and squashfuse's idle timeout works by
     * raising SIGINT: an inherited "ignore" (srun tasks, `cmd &` in a
     * script) would keep the daemon forever. */
    for (int sig = 1; sig < NSIG; sig++)
        (void)sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Close every descriptor from `lowest` on but `keep1` and `keep2`. */
static void close_from(int lowest, int keep1, int keep2)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int fds[4096], n = 0;
    if (!d) {
        for (int fd = lowest; fd < 65536; fd++)
            if (fd != keep1 && fd != keep2)
                close(fd);
        return;
    }
    while ((de = readdir(d)) != NULL && n < 4096) {
        int fd = atoi(de->d_name);
        if (de->d_name[0] != '.' && fd >= lowest && fd != keep1 && fd != keep2 && fd != dirfd(d))
            fds[n++] = fd;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static void run_wait(char *const argv[])
{
    pid_t pid = fork();
    int status;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    if (pid > 0)
        (void)waitpid(pid, &status, 0);
}

/*
 * Start the FUSE server (`sqenv-enter --serve`, serve.c) for IMAGE on MNT in its own session (a Ctrl-C or
 * hang-up of this terminal must not unmount an image other programs use),
 * detached from the program (double fork), with default signal handling and
 * no descriptor of ours. A small watcher waits for it and then removes the
 * mount point and, when it is the last, the runtime directory. Its failure
 * is reported on `status_fd` (closed on success only when the daemon ends).
 */
static pid_t start_daemon(const char *image, const char *mnt, const char *rt, const char *id, const char *idle,
                          int rtfd, int status_fd)
{
    pid_t first = fork();
    if (first < 0)
        die("cannot start the image server");
    if (first > 0)
        return first;
    /* first child: new session, no terminal or pipe of the caller's (a
     * `$(python ...)` or a captured stdout would wait for the daemon's end),
     * then the watcher, and gone */
    setsid();
    reset_signals();
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    signal(SIGPIPE, SIG_IGN);
    pid_t watcher = fork();
    if (watcher != 0)
        _exit(watcher < 0);
    {
        char users[PATH_MAX + 256], err_name[NAME_MAX + 1], lock_name[NAME_MAX + 1];
        int status = 0;
        snprintf(users, sizeof users, "%s/%s.users", rt, id);
        snprintf(err_name, sizeof err_name, "%s.err", id);
        snprintf(lock_name, sizeof lock_name, "%s.lock", id);
        int err = openat(rtfd, err_name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        pid_t daemon = fork();
        if (daemon == 0) {
            signal(SIGPIPE, SIG_DFL);
            if (err >= 0)
                dup2(err, 2);
            close_from(3, -1, -1);
            execl("/proc/self/exe", "sqenv-enter", "--serve", "-t", idle, "-U", users, image, mnt, (char *)NULL);
            _exit(127);
        }
        /* keep only the status pipe and the runtime dir */
        close_from(3, status_fd, rtfd);
        int dir = rtfd;
        if (daemon > 0)
            while (waitpid(daemon, &status, 0) < 0 && errno == EINTR)
                ;
        char byte = (char)(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        if (daemon < 0)
            byte = 127;
        if (write(status_fd, &byte, 1) < 0) {
            /* the launcher is gone: the mount worked and has idled out */
        }
        if (dir >= 0) {
            struct stat st, a, b;
            struct statfs sf;
            if (byte == 0 || fstatat(dir, err_name, &st, 0) != 0 || st.st_size == 0)
                unlinkat(dir, err_name, 0);
            /* The mount point goes, under the mount lock (a new launch may be
             * mounting there already), unless something is mounted on it. */
            for (int tries = 0; tries < 50; tries++) {
                int lock = openat(dir, lock_name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (lock < 0 || flock(lock, LOCK_EX) != 0)
                    break;
                if (fstat(lock, &a) != 0 || fstatat(dir, lock_name, &b, AT_SYMLINK_NOFOLLOW) != 0 ||
                    a.st_ino != b.st_ino) {
                    close(lock);
                    continue;
                }
                int mfd = openat(dir, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (mfd >= 0 && fstatfs(mfd, &sf) == 0 && sf.f_type != FUSE_MAGIC) {
                    close(mfd);
                    unlinkat(dir, id, AT_REMOVEDIR);
                } else if (mfd >= 0) {
                    close(mfd);
                }
                unlinkat(dir, lock_name, 0);
                close(lock);
                break;
            }
            /* the runtime dir itself once empty (a race with a new launch
             * there is retried by that launch: mount_images) */
            rmdir(rt);
        }
        _exit(0);
    }
}

/* Mount one image (cold path), under a lock in the runtime directory.
 * Returns -1 when the runtime directory was removed meanwhile (its last
 * mount idled out): the caller opens it again. */
static int mount_cold(int rtfd, const char *rt, const char *image, const char *id, const char *idle, const char *prefix)
{
    char lock_name[NAME_MAX + 1], err_name[NAME_MAX + 1], mnt[PATH_MAX + 256];
    struct stat img_st, a, b;
    int lock = -1, pipefd[2], fd;

    snprintf(lock_name, sizeof lock_name, "%s.lock", id);
    snprintf(err_name, sizeof err_name, "%s.err", id);
    snprintf(mnt, sizeof mnt, "%s/%s", rt, id);
    if (stat(image, &img_st) != 0 || !S_ISREG(img_st.st_mode))
        die_hint("restore it, or rebuild the environment with `sqenv create --force`",
                 "the image `%s` of this environment is missing", image);
    if (!in_path("fusermount3"))
        die_hint("run `sqenv doctor` for how to install it (Debian: `apt-get install fuse3`), or set SQENV_ENGINE=apptainer",
                 "`fusermount3` is not installed on this node");
    /* The lock file is removed by whoever holds it last: make sure the one
     * we locked is still the one in the directory. */
    for (int tries = 0;; tries++) {
        if (tries > 50) {
            errno = 0;
            die("cannot lock %s/%s", rt, lock_name);
        }
        lock = openat(rtfd, lock_name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (lock < 0 && errno == ENOENT)
            return -1;
        if (lock < 0)
            die("cannot create the lock %s/%s", rt, lock_name);
        if (flock(lock, LOCK_EX) != 0)
            die("cannot lock %s/%s", rt, lock_name);
        if (fstat(lock, &a) == 0 && fstatat(rtfd, lock_name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev)
            break;
        close(lock);
    }
    /* Mounted meanwhile by the holder before us? */
    fd = open_marker(rtfd, id);
    if (fd >= 0) {
        close(fd);
        goto done;
    }
    if (mkdirat(rtfd, id, 0700) != 0) {
        if (errno == ENOENT) {
            close(lock);
            return -1;
        }
        /* a dead mount (its daemon was killed) fails stat: detach it */
        char *umount3[] = {"fusermount3", "-u", "-z", mnt, NULL};
        char *umount2[] = {"fusermount", "-u", "-z", mnt, NULL};
        run_wait(umount3);
        if (fstatat(rtfd, id, &a, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(a.st_mode))
            run_wait(umount2);
        if (fstatat(rtfd, id, &a, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(a.st_mode)) {
            /* not a directory: something of ours in the way; remove it */
            if (unlinkat(rtfd, id, 0) != 0 || mkdirat(rtfd, id, 0700) != 0)
                die("cannot create the mount point %s", mnt);
        }
    }
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        die("cannot create a pipe");
    pid_t first = start_daemon(image, mnt, rt, id, idle, rtfd, pipefd[1]);
    close(pipefd[1]);
    while (waitpid(first, NULL, 0) < 0 && errno == EINTR)
        ;
    for (int waited = 0;; waited += 5) {
        struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
        fd = open_marker(rtfd, id);
        if (fd >= 0) {
            close(fd);
            break;
        }
        if (poll(&pfd, 1, 5) > 0) {
            char msg[512] = "";
            int efd = openat(rtfd, err_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (efd >= 0) {
                ssize_t n = read(efd, msg, sizeof msg - 1);
                msg[n > 0 ? n : 0] = '\0';
                close(efd);
                for (char *c = msg; *c; c++)
                    if (*c == '\n')
                        *c = (c[1] ? ' ' : '\0');
                unlinkat(rtfd, err_name, 0);
            }
            unlinkat(rtfd, lock_name, 0);
            char hint[PATH_MAX + 160];
            snprintf(hint, sizeof hint,
                     "the image may be corrupt: check it with `sqenv info --verify %s`, rebuild with `sqenv create --force`",
                     prefix ? prefix : "PREFIX");
            die_hint(hint, "cannot mount the image `%s`: %s", image, *msg ? msg : "squashfuse_ll failed");
        }
        if (waited > MOUNT_TIMEOUT_MS) {
            errno = 0;
            die("timed out mounting %s at %s", image, mnt);
        }
    }
    close(pipefd[0]);
done:
    unlinkat(rtfd, lock_name, 0);
    close(lock);
    return 0;
}

/* A copy that `sqenv stage` put on node-local storage for this job wins,
 * only if it is the caller's own (node-local /tmp is shared by all users). */
static const char *staged_copy(const char *stage, const char *image, char *buf, size_t size)
{
    const char *job = getenv("SLURM_JOB_ID");
    const char *base = strrchr(image, '/');
    struct stat st;
    char dir[PATH_MAX - NAME_MAX - 2];
    int dfd, fd;
    if (!job || !*job || strchr(job, '/'))
        return image;
    base = base ? base + 1 : image;
    snprintf(dir, sizeof dir, "%s/sqenv-stage-%s", stage && *stage ? stage : "/tmp", job);
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return image;
    if (fstat(dfd, &st) != 0 || st.st_uid != getuid() || (st.st_mode & 022)) {
        close(dfd);
        return image;
    }
    fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    close(dfd);
    if (fd < 0)
        return image;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid()) {
        close(fd);
        return image;
    }
    close(fd);
    snprintf(buf, size, "%s/%s", dir, base);
    return buf;
}

/*
 * Join the users of image ID: a shared flock on RUNTIME/ID.users, kept on a
 * high descriptor across exec for the program's lifetime. The image's server
 * idles out only once it can lock that file exclusively (serve.c), and then
 * removes it: a file we locked that is no longer the one in the directory
 * means that server is going, so join again. -1: the runtime dir is gone.
 */
static int join_users(int rtfd, const char *id)
{
    char name[NAME_MAX + 1];
    struct stat a, b;
    snprintf(name, sizeof name, "%s.users", id);
    for (int tries = 0; tries < 50; tries++) {
        int fd = openat(rtfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            if (errno == ENOENT)
                return -1;
            die("cannot open %s", name);
        }
        while (flock(fd, LOCK_SH) != 0)
            if (errno != EINTR)
                die("cannot lock %s", name);
        if (fstat(fd, &a) == 0 && fstatat(rtfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev)
            return fd;
        close(fd);
    }
    errno = 0;
    die("cannot join the users of %s", id);
    return -1;
}

/* Mount (or reuse) each image, pin it, and return its directory as a layer. */
static void mount_images(char **images, int n, const char *idle, const char *rt_conf, const char *stage,
                         const char *prefix, char **layers)
{
    char rt[PATH_MAX];
    int rtfd = runtime_dir(rt_conf, rt, sizeof rt);
    for (const char *c = (char *)idle; *c; c++)
        if (*c < '0' || *c > '9') {
            errno = 0;
            die("the idle timeout must be a number of seconds: %s", idle);
        }
    for (int i = 0; i < n; i++) {
        char id[200], staged[PATH_MAX + NAME_MAX + 2];
        int users = -1, live = -1;
        image_id(images[i], id, sizeof id);
        for (int tries = 0; tries < 5 && live < 0; tries++) {
            if (users < 0)
                users = join_users(rtfd, id);
            if (users >= 0) {
                live = open_marker(rtfd, id);
                if (live >= 0)
                    break;
            }
            if (users < 0 ||
                mount_cold(rtfd, rt, staged_copy(stage, images[i], staged, sizeof staged), id, idle, prefix) < 0) {
                /* the runtime directory went with its last mount: start again */
                if (users >= 0)
                    close(users);
                users = -1;
                close(rtfd);
                rtfd = runtime_dir(rt_conf, rt, sizeof rt);
            }
        }
        if (live < 0)
            die("cannot open the mounted image at %s/%s", rt, id);
        close(live);
        (void)move_high(users);
        layers[i] = malloc(strlen(rt) + strlen(id) + 2);
        if (!layers[i])
            die("out of memory");
        sprintf(layers[i], "%s/%s", rt, id);
    }
    close(rtfd);
}

/*
 * dash opens the launcher script on the lowest free descriptor and marks it
 * close-on-exec only when it moves it up from below 10: a caller that passes
 * 3..9 (and more) would see the launcher's descriptor in the program. That
 * can only happen when 3..9 are all open, so the common case costs one fcntl.
 */
static void close_script_fd(const char *prefix, const char *launcher)
{
    char path[PATH_MAX];
    struct stat script, st;
    for (int fd = 3; fd <= 9; fd++)
        if (fcntl(fd, F_GETFD) < 0)
            return;
    if (launcher)
        snprintf(path, sizeof path, "%s", launcher);
    else
        snprintf(path, sizeof path, "%s/launcher", prefix);
    if (stat(path, &script) != 0)
        return;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        int fd = atoi(de->d_name);
        int flags;
        if (fd < 3 || fd == dirfd(d) || (flags = fcntl(fd, F_GETFD)) < 0 || (flags & FD_CLOEXEC))
            continue;
        if (fstat(fd, &st) == 0 && st.st_dev == script.st_dev && st.st_ino == script.st_ino)
            close(fd);
    }
    closedir(d);
}

int main(int argc, char **argv)
{
    char *layers[MAX_LAYERS], *images[MAX_LAYERS], *prefixes[MAX_PREFIXES], *argv0 = NULL, *upper = NULL, *script = NULL,
                                                                              *work = NULL;
    const char *idle = "60", *runtime = NULL, *stage = NULL;
    int nlayers = 0, nimages = 0, nprefixes = 0, writable = 0, opt;
    char cwd[PATH_MAX];
    int have_cwd = getcwd(cwd, sizeof cwd) != NULL;

    /* Never with more rights than the caller: setuid, setgid or file
     * capabilities would turn the namespace and mounts below into a way to
     * act as someone else. The kernel says so in AT_SECURE. */
    if (getauxval(AT_SECURE)) {
        errno = 0;
        die("refusing to run setuid, setgid or with file capabilities: remove them (`chmod u-s,g-s %s`, "
            "`setcap -r %s`)", argv[0], argv[0]);
    }
    int launched = launch_args(&argc, &argv); /* started as PREFIX/bin/NAME (launch.h) */
    if (!launched && argc > 1 && !strcmp(argv[1], "--serve"))
        return serve_main(argc - 1, argv + 1);
    if (argc == 3 && !strcmp(argv[1], "--check-cpu")) { /* the apptainer engine's check */
        errno = 0;
        check_cpu(argv[2], die);
        return 0;
    }
    while ((opt = getopt(argc, argv, "+i:t:r:s:l:L:p:a:wu:W:m:C:")) != -1) {
        switch (opt) {
        case 'C':
            errno = 0;
            check_cpu(optarg, die);
            break;
        case 'i':
            if (nimages == MAX_LAYERS)
                die("too many layers");
            images[nimages++] = optarg;
            break;
        case 't':
            idle = optarg;
            break;
        case 'r':
            runtime = optarg;
            break;
        case 's':
            stage = optarg;
            break;
        case 'l':
            if (nlayers == MAX_LAYERS)
                die("too many layers");
            layers[nlayers++] = optarg;
            break;
        case 'p':
            if (nprefixes == MAX_PREFIXES)
                die("too many prefixes");
            prefixes[nprefixes++] = optarg;
            break;
        case 'a':
            argv0 = optarg;
            break;
        case 'L':
            script = optarg;
            break;
        case 'w':
            writable = 1;
            break;
        case 'u':
            upper = optarg;
            break;
        case 'W':
            work = optarg;
            break;
        case 'm':
            if (optarg[0] != '/' || optarg[1] == '\0') {
                errno = 0;
                die("-m needs an absolute path other than /");
            }
            mount_path = optarg;
            break;
        default:
            errno = 0;
            die("usage: sqenv-enter [-i IMAGE]... [-t IDLE] [-r RUNTIME] [-s STAGE] [-l LOWER]... [-w] [-u UPPER -W WORK] [-p PREFIX]... [-L SCRIPT] [-m PATH] [-a ARGV0] -- PROG [ARGS...]");
        }
    }
    if (optind >= argc || nlayers + nimages == 0 || !upper != !work) {
        errno = 0;
        die("usage: sqenv-enter [-i IMAGE]... [-t IDLE] [-r RUNTIME] [-s STAGE] [-l LOWER]... [-w] [-u UPPER -W WORK] [-p PREFIX]... [-L SCRIPT] [-m PATH] [-a ARGV0] -- PROG [ARGS...]");
    }
    if (nprefixes && !launched) /* before PREFIX is covered by the image; no shell read it if launched */
        close_script_fd(prefixes[0], script);
    if (nimages) {
        /* images first (top first), then any -l directories below them */
        if (nimages + nlayers > MAX_LAYERS)
            die("too many layers");
        memmove(layers + nimages, layers, (size_t)nlayers * sizeof *layers);
        mount_images(images, nimages, idle, runtime, stage, nprefixes ? prefixes[0] : NULL, layers);
        nlayers += nimages;
    }

    enter_user_namespace();
    make_mount_point(mount_path);
    mount_layers(layers, nlayers, writable, upper, work);
    for (int i = 0; i < nprefixes; i++)
    {
        bind(mount_path, prefixes[i], 0);
        /* a bind does not inherit read-only: say it again, so writes fail with EROFS */
        if (!writable)
            make_readonly(prefixes[i]);
    }
    if (have_cwd && chdir(cwd) != 0)
        (void)chdir("/");

    char *prog = argv[optind];
    if (argv0)
        argv[optind] = argv0;
    if (strchr(prog, '/'))
        execv(prog, argv + optind);
    else
        execvp(prog, argv + optind);
    int err = errno;
    errno = err;
    fprintf(stderr, "sqenv: cannot run %s: %s\n", prog, strerror(err));
    return err == ENOENT ? 127 : 126;
}
