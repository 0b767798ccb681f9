/*
 * sqenv-enter --serve: the FUSE server that shows a squashfs image, built on
 * libsquashfuse (the library behind squashfuse_ll) and libfuse3's low-level
 * API, linked into the same static binary as the namespace helper.
 *
 * Why not squashfuse_ll itself: a warm `import numpy, scipy.linalg, pandas`
 * sent it ~2,500 requests (OPEN, RELEASE, GETATTR, OPENDIR, READDIR, ...).
 * This server answers OPEN and OPENDIR with ENOSYS once, which makes the
 * kernel stop sending them and their RELEASEs for the whole mount, keep file
 * pages cached (FOPEN_KEEP_CACHE) and cache directory listings
 * (FOPEN_CACHE_DIR); symlinks are cached too. What is left on a warm import
 * is Python's isatty() ioctl per opened file, answered at once.
 *
 * Without OPEN the server cannot count open files, so it does not idle out
 * the way squashfuse_ll does. Its users are counted by the kernel instead:
 * every launch holds a shared flock on the image's users file (RUNTIME/ID.users)
 * for the program's lifetime (see enter.c); the server probes for an exclusive
 * lock once a second and, once it has got one for IDLE seconds in a row, keeps
 * it, unmounts, removes the users file and exits. A launch blocked on that
 * lock meanwhile notices the file is gone and mounts afresh.
 *
 * usage: sqenv-enter --serve [-f] [-d] [-t IDLE -U USERS] IMAGE MOUNTPOINT
 *   (-f is accepted for symmetry: the server always stays in the foreground;
 *   -d prints every request, as libfuse's debug mode: the benchmarks count them)
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fuse3/fuse_lowlevel.h>
#include <squashfuse/ll.h>

int serve_main(int argc, char **argv);

/* The kernel sends no more OPEN/RELEASE (OPENDIR/RELEASEDIR) after this. */
static void op_no_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, ENOSYS);
}

/* Without OPEN there is no file handle: find the inode per read (the
 * metadata block cache makes that cheap; data pages stay in the kernel). */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    sqfs_ll_i lli;
    off_t got = (off_t)size;
    char *buf;
    (void)fi;
    if (sqfs_ll_iget(req, &lli, ino))
        return; /* replied */
    if (!S_ISREG(lli.inode.base.mode)) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    buf = malloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (sqfs_read_range(&lli.ll->fs, &lli.inode, off, &got, buf))
        fuse_reply_err(req, EIO);
    else
        fuse_reply_buf(req, buf, (size_t)got);
    free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    sqfs_ll_i lli;
    sqfs_dir dir;
    sqfs_name name;
    sqfs_dir_entry entry;
    sqfs_err err = SQFS_OK;
    struct stat st;
    char *buf, *pos;
    (void)fi;
    if (sqfs_ll_iget(req, &lli, ino))
        return;
    if (!S_ISDIR(lli.inode.base.mode)) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    if (sqfs_dir_open(&lli.ll->fs, &lli.inode, &dir, off)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    pos = buf = malloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    memset(&st, 0, sizeof st);
    sqfs_dentry_init(&entry, name);
    while (sqfs_dir_next(&lli.ll->fs, &dir, &entry, &err)) {
        size_t used;
        st.st_ino = lli.ll->ino_fuse_num(lli.ll, &entry);
        st.st_mode = sqfs_dentry_mode(&entry);
        used = fuse_add_direntry(req, pos, size, sqfs_dentry_name(&entry), &st,
                                 (off_t)sqfs_dentry_next_offset(&entry));
        if (used > size)
            break;
        pos += used;
        size -= used;
    }
    if (err)
        fuse_reply_err(req, EIO);
    else
        fuse_reply_buf(req, buf, (size_t)(pos - buf));
    free(buf);
}

/* Python's open() asks isatty() of every file: no terminal here. */
static void op_ioctl(fuse_req_t req, fuse_ino_t ino, int cmd, void *arg, struct fuse_file_info *fi, unsigned flags,
                     const void *in, size_t in_size, size_t out_size)
{
    (void)ino, (void)cmd, (void)arg, (void)fi, (void)flags, (void)in, (void)in_size, (void)out_size;
    fuse_reply_err(req, ENOTTY);
}

static void op_init(void *data, struct fuse_conn_info *conn)
{
    (void)data;
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
        conn->want |= FUSE_CAP_CACHE_SYMLINKS;
}

/* --- Idle timeout by users' locks ---------------------------------------- */

static struct {
    int fd;             /* our own open file description of the users file */
    const char *path;   /* its path, to remove it on the way out */
    unsigned idle_secs; /* 0: never idle out */
    pthread_t main;
} users = {-1, NULL, 0, 0};

static void *idle_watch(void *arg)
{
    time_t idle_since = 0;
    sigset_t all;
    (void)arg;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals go to the main loop */
    for (;;) {
        sleep(1);
        if (flock(users.fd, LOCK_EX | LOCK_NB) != 0) {
            idle_since = 0; /* a program of the image runs */
            continue;
        }
        if (!idle_since)
            idle_since = time(NULL);
        if ((unsigned)(time(NULL) - idle_since) >= users.idle_secs) {
            /* keep the lock: launches wait until the mount is gone */
            kill(getpid(), SIGTERM);
            return NULL;
        }
        flock(users.fd, LOCK_UN);
    }
}

int serve_main(int argc, char **argv)
{
    struct fuse_lowlevel_ops ops;
    const char *image, *mountpoint;
    char *fargv[] = {"sqenv-serve", "-o", "ro", "-d", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    sqfs_ll_chan ch;
    sqfs_ll *ll;
    int opt, err;

    prctl(PR_SET_NAME, "sqenv-serve"); /* what ps, top and pgrep -x show */
    optind = 1;
    while ((opt = getopt(argc, argv, "+fdt:U:")) != -1) {
        switch (opt) {
        case 'f':
            break;
        case 'd':
            args.argc = 4;
            break;
        case 't':
            users.idle_secs = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'U':
            users.path = optarg;
            break;
        default:
            fprintf(stderr, "usage: sqenv-enter --serve [-f] [-d] [-t IDLE -U USERS] IMAGE MOUNTPOINT\n");
            return 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: sqenv-enter --serve [-f] [-d] [-t IDLE -U USERS] IMAGE MOUNTPOINT\n");
        return 2;
    }
    image = argv[optind];
    mountpoint = argv[optind + 1];
    if (users.path) {
        users.fd = open(users.path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (users.fd < 0) {
            fprintf(stderr, "cannot open %s: %s\n", users.path, strerror(errno));
            return 1;
        }
    }
    ll = sqfs_ll_open(image, 0);
    if (!ll)
        return 1; /* libsquashfuse said why on stderr */

    memset(&ops, 0, sizeof ops);
    ops.init = op_init;
    ops.lookup = sqfs_ll_op_lookup;
    ops.forget = sqfs_ll_op_forget;
    ops.getattr = sqfs_ll_op_getattr;
    ops.readlink = sqfs_ll_op_readlink;
    ops.open = op_no_open;
    ops.opendir = op_no_open;
    ops.read = op_read;
    ops.readdir = op_readdir;
    ops.ioctl = op_ioctl;
    ops.listxattr = sqfs_ll_op_listxattr;
    ops.getxattr = sqfs_ll_op_getxattr;
    ops.statfs = stfs_ll_op_statfs;

    if (sqfs_ll_mount(&ch, mountpoint, &args, &ops, sizeof ops, ll) != SQFS_OK) {
        fprintf(stderr, "cannot mount %s on %s\n", image, mountpoint);
        return 1;
    }
    err = fuse_set_signal_handlers(ch.session);
    if (!err && users.fd >= 0 && users.idle_secs) {
        pthread_t watcher;
        users.main = pthread_self();
        if (pthread_create(&watcher, NULL, idle_watch, NULL) == 0)
            pthread_detach(watcher);
    }
    if (!err) {
        err = fuse_session_loop(ch.session);
        if (err == SIGTERM || err == SIGINT || err == SIGHUP)
            err = 0; /* asked to stop (or idled out): a clean end */
    }
    fuse_remove_signal_handlers(ch.session);
    sqfs_ll_unmount(&ch, mountpoint);
    /* Only now, with the mount gone and the lock still ours (if we idled
     * out), drop the users file: blocked launches then mount afresh. */
    if (users.path && flock(users.fd, LOCK_EX | LOCK_NB) == 0) {
        struct stat a, b;
        if (fstat(users.fd, &a) == 0 && lstat(users.path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            unlink(users.path);
    }
    sqfs_ll_destroy(ll);
    free(ll);
    return err ? 1 : 0;
}
