/*
 * Launch mode: `PREFIX/bin/NAME` is a symlink to `../sqenv-enter`, so a
 * program starts without a shell. The POSIX sh launcher (`PREFIX/launcher`)
 * costs a `dash` start and a second exec on every `python` call: 1.4-2 ms
 * of a 2-3 ms overhead, measured. Here the helper does the launcher's work
 * for the common case only: an install whose launcher header (values
 * written by sqenv, `publish/launchers.py`) names the embedded engine and
 * nothing else to do (no activation script, no MPI library path, no CPU
 * level, no profile variables, not a staged copy, the fixed mount path), on
 * a node where that engine is usable and SQENV_ENGINE does not say
 * otherwise. Every other case, and anything it does not recognise, runs the
 * shell launcher exactly as before, with the same $0 and arguments: the
 * shell launcher stays the one full implementation.
 *
 * Where it was started from is AT_EXECFN (the path given to execve, which
 * the kernel also hands a script as $0), not argv[0], which a caller may set
 * to anything.
 */
#define LAUNCH_HEAD "#!/bin/sh\n# Launcher written by sqenv "
#define LAUNCH_MAX_HEADER 8192

/* The shell launcher with $0 = `self` and the program's arguments: sourced
 * by `sh -c` so that $0 is the path we were started by, as when the kernel
 * runs it. `launcher` NULL: the one beside this binary (/proc/self/exe). */
static void launch_fallback(const char *launcher, const char *self, char **args)
{
    char exe[PATH_MAX], script[3 * PATH_MAX + 8], *argv[4096];
    int n = 0;
    if (!launcher) {
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        char *slash;
        if (len <= 0)
            die("cannot find the install of %s", self);
        exe[len] = '\0';
        slash = strrchr(exe, '/');
        if (!slash || (size_t)(slash - exe) + sizeof "/launcher" > sizeof exe)
            die("cannot find the install of %s", self);
        strcpy(slash, "/launcher");
        launcher = exe;
    }
    /* `. 'PATH'` with every ' of PATH written as '\'' */
    char *out = script;
    out += sprintf(out, ". '");
    for (const char *c = launcher; *c; c++) {
        if ((size_t)(out - script) > sizeof script - 8) {
            errno = ENAMETOOLONG;
            die("cannot run the launcher of %s", self);
        }
        if (*c == '\'')
            out += sprintf(out, "'\\''");
        else
            *out++ = *c;
    }
    strcpy(out, "'");
    argv[n++] = "/bin/sh";
    argv[n++] = "-c";
    argv[n++] = script;
    argv[n++] = (char *)self;
    for (; *args && n < (int)(sizeof argv / sizeof *argv) - 1; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    execv("/bin/sh", argv);
    die("cannot run /bin/sh for the launcher of %s", self);
}

/* One header value: `word`, `'quoted'` (no quote inside), or
 * `${ENV:-word}`/`${ENV:-'quoted'}` (the environment's ENV when set and not
 * empty). Written into `out`; 0 when it is anything else. */
static int launch_value(const char *text, char *out, size_t size)
{
    char env[64];
    const char *end;
    size_t len;
    if (!strncmp(text, "${", 2)) {
        const char *sep = strstr(text, ":-");
        if (!sep || (size_t)(sep - text - 2) >= sizeof env)
            return 0;
        memcpy(env, text + 2, (size_t)(sep - text - 2));
        env[sep - text - 2] = '\0';
        for (const char *c = env; *c; c++)
            if (!(*c == '_' || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
                return 0;
        len = strlen(sep + 2);
        if (len == 0 || sep[2 + len - 1] != '}')
            return 0;
        char inner[PATH_MAX];
        if (len - 1 >= sizeof inner)
            return 0;
        memcpy(inner, sep + 2, len - 1);
        inner[len - 1] = '\0';
        const char *given = getenv(env);
        if (given && *given) {
            if (strlen(given) >= size)
                return 0;
            strcpy(out, given);
            return 1;
        }
        return inner[0] == '\0' ? (out[0] = '\0', 1) : launch_value(inner, out, size);
    }
    if (text[0] == '\'') {
        end = strchr(text + 1, '\'');
        if (!end || end[1] != '\0')
            return 0;
        len = (size_t)(end - text - 1);
        if (len >= size)
            return 0;
        memcpy(out, text + 1, len);
        out[len] = '\0';
        return 1;
    }
    for (const char *c = text; *c; c++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:+,-@%=", *c))
            return 0;
    if (strlen(text) >= size)
        return 0;
    strcpy(out, text);
    return 1;
}

/* Whether the embedded engine can run here (the launcher's sqenv_embedded_usable). */
static int launch_embedded_usable(void)
{
    char buf[32];
    int fd;
    ssize_t got;
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        return 0;
    fd = open("/proc/sys/user/max_user_namespaces", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0)
        return 1;
    buf[got] = '\0';
    return atol(buf) > 0;
}

/*
 * Launch mode, when this binary was started through a name other than its
 * own: the helper's own options for the program (argc and argv replaced),
 * or an exec of the shell launcher. Returns 0 in helper mode.
 */
static int launch_args(int *argc, char ***argv)
{
    static char self[PATH_MAX], prefix[PATH_MAX], launcher[PATH_MAX], prog[PATH_MAX], header[LAUNCH_MAX_HEADER];
    static char layers[PATH_MAX], idle[64] = "60", runtime[PATH_MAX], stage[PATH_MAX], images[16][PATH_MAX];
    static char *args[4096];
    const char *execfn = (const char *)getauxval(AT_EXECFN), *base, *engine;
    char value[PATH_MAX], *line, *next, *slash;
    int fd, n = 0, nimages = 0, have_layers = 0, embedded_first = 0, have_head;
    ssize_t got;

    if (!execfn || !strncmp(execfn, "/proc/", 6))
        return 0;
    base = strrchr(execfn, '/');
    base = base ? base + 1 : execfn;
    if (!strcmp(base, "sqenv-enter"))
        return 0;
    char **rest = *argv + 1;
    /* the path we were started by, absolute */
    if (execfn[0] == '/') {
        if (strlen(execfn) >= sizeof self)
            launch_fallback(NULL, execfn, rest);
        strcpy(self, execfn);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd) || (size_t)snprintf(self, sizeof self, "%s/%s", cwd, execfn) >= sizeof self)
            launch_fallback(NULL, execfn, rest);
    }
    if (strstr(self, "/./") || strstr(self, "/../") || strstr(self, "//"))
        launch_fallback(NULL, execfn, rest);
    /* PREFIX/bin/NAME: PREFIX is two levels up, as the shell launcher finds it */
    strcpy(prefix, self);
    slash = strrchr(prefix, '/');
    *slash = '\0';
    slash = strrchr(prefix, '/');
    if (!slash || slash == prefix)
        launch_fallback(NULL, execfn, rest);
    *slash = '\0';
    snprintf(launcher, sizeof launcher, "%s/launcher", prefix);
    fd = open(launcher, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        launch_fallback(NULL, execfn, rest); /* a symlink from elsewhere: the shell follows it */
    got = read(fd, header, sizeof header - 1);
    close(fd);
    have_head = got > (ssize_t)strlen(LAUNCH_HEAD) && !memcmp(header, LAUNCH_HEAD, strlen(LAUNCH_HEAD));
    if (!have_head)
        launch_fallback(launcher, execfn, rest);
    header[got] = '\0';
    /* the values: after the three comment lines, up to the first empty line */
    line = header;
    for (int skip = 0; skip < 3 && line; skip++) {
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    for (; line && *line != '\n' && *line; line = next) {
        char *eq;
        next = strchr(line, '\n');
        if (!next)
            launch_fallback(launcher, execfn, rest); /* longer than we read */
        *next++ = '\0';
        eq = strchr(line, '=');
        if (!eq || !launch_value(eq + 1, value, sizeof value))
            launch_fallback(launcher, execfn, rest);
        *eq = '\0';
        if (!strcmp(line, "SQENV_LAYERS")) {
            strcpy(layers, value);
            have_layers = value[0] != '\0';
        } else if (!strcmp(line, "SQENV_ENGINES")) {
            embedded_first = !strncmp(value, "embedded", 8) && (value[8] == ' ' || value[8] == '\0');
        } else if (!strcmp(line, "SQENV_MOUNT_PATH")) {
            if (strcmp(value, mount_path))
                launch_fallback(launcher, execfn, rest);
        } else if (!strcmp(line, "SQENV_ACTIVATE") || !strcmp(line, "SQENV_LD_PREPEND") ||
                   !strcmp(line, "sqenv_staged")) {
            if (value[0] != '\0' && strcmp(value, "0"))
                launch_fallback(launcher, execfn, rest);
        } else if (!strcmp(line, "SQENV_DEFAULT_ENGINE")) {
            if (strcmp(value, "auto") && strcmp(value, "embedded"))
                launch_fallback(launcher, execfn, rest);
        } else if (!strcmp(line, "SQENV_IDLE")) {
            if (strlen(value) >= sizeof idle)
                launch_fallback(launcher, execfn, rest);
            strcpy(idle, value[0] ? value : "60");
        } else if (!strcmp(line, "SQENV_RUNTIME")) {
            strcpy(runtime, value);
        } else if (!strcmp(line, "SQENV_STAGE")) {
            strcpy(stage, value);
        } else if (strcmp(line, "SQENV_BIND_PATHS") && strcmp(line, "sqenv_staged_at")) {
            launch_fallback(launcher, execfn, rest); /* a value only the shell launcher knows */
        }
    }
    if (!line || !have_layers || !embedded_first)
        launch_fallback(launcher, execfn, rest);
    engine = getenv("SQENV_ENGINE");
    if (engine && *engine && strcmp(engine, "auto") && strcmp(engine, "embedded"))
        launch_fallback(launcher, execfn, rest);
    if ((!engine || !*engine || !strcmp(engine, "auto")) && !launch_embedded_usable())
        launch_fallback(launcher, execfn, rest);
    /* the layers, top (last) first, as the launcher passes them */
    for (char *word = strtok(layers, " "); word; word = strtok(NULL, " ")) {
        if (nimages == 16 || strchr(word, '/') ||
            (size_t)snprintf(images[nimages], PATH_MAX, "%s/%s", prefix, word) >= PATH_MAX)
            launch_fallback(launcher, execfn, rest);
        nimages++;
    }
    if ((size_t)snprintf(prog, sizeof prog, "%s/bin/%s", prefix, base) >= sizeof prog)
        launch_fallback(launcher, execfn, rest);
    args[n++] = (*argv)[0];
    args[n++] = "-t";
    args[n++] = idle;
    args[n++] = "-r";
    args[n++] = runtime;
    args[n++] = "-s";
    args[n++] = stage;
    args[n++] = "-p";
    args[n++] = prefix;
    for (int i = nimages - 1; i >= 0; i--) {
        args[n++] = "-i";
        args[n++] = images[i];
    }
    args[n++] = "-a";
    args[n++] = self;
    args[n++] = "--";
    args[n++] = prog;
    for (; *rest; rest++) {
        if (n >= (int)(sizeof args / sizeof *args) - 1) {
            errno = E2BIG;
            die("too many arguments");
        }
        args[n++] = *rest;
    }
    args[n] = NULL;
    if (setenv("SQENV_PREFIX", prefix, 1) != 0)
        die("cannot set SQENV_PREFIX");
    *argc = n;
    *argv = args;
    return 1;
}
