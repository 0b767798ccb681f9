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
 * usage: sqenv-enter [-l LOWER]... [-w] [-u UPPER -W WORK] [-p PREFIX]
 *                    [-m PATH] [-a ARGV0] -- PROG [ARGS...]
 *   -l LOWER   directory to show at the fixed path (several: a read-only
 *              overlay, the FIRST one given is the top layer)
 *   -w         bind the (single) LOWER read-write (used while building)
 *   -u UPPER   with -W: a writable overlay of the LOWERs, changes go to
 *   -W WORK    UPPER (overlayfs' upperdir and workdir; used by updates)
 *   -p PREFIX  also show the environment over PREFIX (may repeat)
 *   -m PATH    show it at PATH instead of the fixed mount path (`sqenv wrap
 *              --mask`: a tree at its original place)
 *   -a ARGV0   argv[0] for PROG (default PROG)
 *   PROG       absolute path, or a name looked up in PATH
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
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

int main(int argc, char **argv)
{
    char *layers[MAX_LAYERS], *prefixes[MAX_PREFIXES], *argv0 = NULL, *upper = NULL, *work = NULL;
    int nlayers = 0, nprefixes = 0, writable = 0, opt;
    char cwd[PATH_MAX];
    int have_cwd = getcwd(cwd, sizeof cwd) != NULL;

    while ((opt = getopt(argc, argv, "+l:p:a:wu:W:m:")) != -1) {
        switch (opt) {
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
            die("usage: sqenv-enter [-l LOWER]... [-w] [-u UPPER -W WORK] [-p PREFIX]... [-m PATH] [-a ARGV0] -- PROG [ARGS...]");
        }
    }
    if (optind >= argc || nlayers == 0 || !upper != !work) {
        errno = 0;
        die("usage: sqenv-enter [-l LOWER]... [-w] [-u UPPER -W WORK] [-p PREFIX]... [-m PATH] [-a ARGV0] -- PROG [ARGS...]");
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
