/*
 * `sqenv-enter -C LEVEL`: refuse, in one line, to run an environment built for
 * a newer CPU than this node's (`sqenv create --target-cpu`), instead of the
 * program dying of SIGILL ("Illegal instruction") somewhere in numpy.
 *
 * LEVEL is an x86-64 psABI level, x86-64-v2, -v3 or -v4: the level conda-forge
 * compiles its microarchitecture builds for (-march=x86-64-vN), and the one
 * sqenv maps archspec names to (zen2 -> v3, zen4 -> v4). Each level is checked
 * by its feature set with __builtin_cpu_supports: libgcc reads CPUID once, in a
 * constructor, so this costs a few table lookups (well under 0.1 ms) and never
 * reads /proc/cpuinfo.
 *
 * TEST ONLY: SQENV_TEST_CPU_FEATURES="sse4.2,popcnt,..." replaces the detected
 * features with that comma-separated list (the names below), so tests can
 * simulate an older CPU. It only ever makes the check stricter or looser for
 * the caller's own launch; it is not a configuration setting.
 */
#ifndef SQENV_CPU_H
#define SQENV_CPU_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cpu_feature {
    const char *name;
    int level; /* the first x86-64 level that requires it */
    int have;
};

static int cpu_listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return 1;
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

/* Exit with one line when this CPU lacks a feature of LEVEL. `die` is the caller's. */
static void check_cpu(const char *level_name, void (*fail)(const char *, ...))
{
    int level = 0;
    if (!strcmp(level_name, "x86-64-v2"))
        level = 2;
    else if (!strcmp(level_name, "x86-64-v3"))
        level = 3;
    else if (!strcmp(level_name, "x86-64-v4"))
        level = 4;
    else
        fail("unknown CPU level `%s` (expected x86-64-v2, x86-64-v3 or x86-64-v4)", level_name);
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    /* __builtin_cpu_supports needs literal names, hence the table of calls */
    struct cpu_feature features[] = {
        {"cmpxchg16b", 2, __builtin_cpu_supports("cmpxchg16b")},
        {"lahf_lm", 2, __builtin_cpu_supports("lahf_lm")},
        {"popcnt", 2, __builtin_cpu_supports("popcnt")},
        {"sse3", 2, __builtin_cpu_supports("sse3")},
        {"ssse3", 2, __builtin_cpu_supports("ssse3")},
        {"sse4.1", 2, __builtin_cpu_supports("sse4.1")},
        {"sse4.2", 2, __builtin_cpu_supports("sse4.2")},
        {"avx", 3, __builtin_cpu_supports("avx")},
        {"avx2", 3, __builtin_cpu_supports("avx2")},
        {"bmi", 3, __builtin_cpu_supports("bmi")},
        {"bmi2", 3, __builtin_cpu_supports("bmi2")},
        {"f16c", 3, __builtin_cpu_supports("f16c")},
        {"fma", 3, __builtin_cpu_supports("fma")},
        {"lzcnt", 3, __builtin_cpu_supports("lzcnt")},
        {"movbe", 3, __builtin_cpu_supports("movbe")},
        {"xsave", 3, __builtin_cpu_supports("xsave")},
        {"avx512f", 4, __builtin_cpu_supports("avx512f")},
        {"avx512bw", 4, __builtin_cpu_supports("avx512bw")},
        {"avx512cd", 4, __builtin_cpu_supports("avx512cd")},
        {"avx512dq", 4, __builtin_cpu_supports("avx512dq")},
        {"avx512vl", 4, __builtin_cpu_supports("avx512vl")},
    };
    const char *simulated = getenv("SQENV_TEST_CPU_FEATURES"); /* test only, see above */
    char missing[256] = "";
    size_t n = sizeof features / sizeof *features;
    for (size_t i = 0; i < n; i++) {
        int have = simulated && *simulated ? cpu_listed(simulated, features[i].name) : features[i].have;
        if (features[i].level <= level && !have) {
            size_t used = strlen(missing);
            snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "", features[i].name);
        }
    }
    if (missing[0])
        fail("this environment was built for %s CPUs, and this CPU lacks %s: "
             "run it on a node with such a CPU, or rebuild it with a lower `--target-cpu` (e.g. x86_64)",
             level_name, missing);
#else
    fail("this environment was built for %s CPUs, and this is not an x86-64 CPU", level_name);
#endif
}

#endif
