/* cli/stats_term.c: the live view's terminal: cbreak mode, the alternate
 * screen, given back on every way out, and frames cut to the window. See
 * cli.h. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"

/* Alternate screen, cursor hidden, no autowrap; and back. */
static const char take_seq[] = "\033[?1049h\033[?25l\033[?7l";
static const char give_seq[] = "\033[?7h\033[?25h\033[?1049l";

static struct termios saved;      /* stdin's modes before */
static int keys;                  /* stdin is a terminal too */
static volatile sig_atomic_t taken, redraw;

/* Only async-signal-safe calls: the signal handlers use these two. */
static void give_back_now(void)
{
    if (!taken)
        return;
    taken = 0;
    if (keys)
        tcsetattr(STDIN_FILENO, TCSADRAIN, &saved);
    ssize_t w = write(STDOUT_FILENO, give_seq, sizeof(give_seq) - 1);
    (void)w;
}

static void take_now(void)
{
    if (keys) {
        struct termios t = saved;
        t.c_lflag &= ~(tcflag_t)(ICANON | ECHO); /* ISIG stays: Ctrl-C, Ctrl-Z */
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSADRAIN, &t);
    }
    ssize_t w = write(STDOUT_FILENO, take_seq, sizeof(take_seq) - 1);
    (void)w;
    taken = 1;
}

/* INT, TERM, HUP, QUIT: the terminal back, then the signal's own end. */
static void on_end(int sig)
{
    give_back_now();
    signal(sig, SIG_DFL);
    raise(sig); /* delivered when this handler returns */
}

/* Ctrl-Z: the terminal back, stop; when continued, take it again. */
static void on_stop(int sig)
{
    give_back_now();
    signal(sig, SIG_DFL);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    sigprocmask(SIG_UNBLOCK, &s, NULL);
    raise(sig); /* stops here until SIGCONT */
    signal(sig, on_stop);
    take_now();
    redraw = 1;
}

static void on_winch(int sig)
{
    (void)sig;
    redraw = 1;
}

int term_take(void)
{
    if (!isatty(STDOUT_FILENO))
        return 0;
    keys = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    static const int ends[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
        signal(ends[i], on_end);
    signal(SIGTSTP, on_stop);
    signal(SIGWINCH, on_winch);
    atexit(term_give_back);
    fflush(stdout);
    take_now();
    return keys ? TERM_KEYS : TERM_SCREEN;
}

void term_give_back(void)
{
    fflush(stdout);
    give_back_now();
}

int term_redraw_pending(void)
{
    int r = redraw;
    redraw = 0;
    return r;
}

void term_size(unsigned *cols, unsigned *rows)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row) {
        *cols = ws.ws_col;
        *rows = ws.ws_row;
    } else {
        *cols = *rows = 0;
    }
}

/* Bytes of the first cols columns of s (len bytes): one column per
 * character, a UTF-8 sequence being one character (the view writes ASCII
 * and the sparkline's blocks). */
static size_t cut_columns(const char *s, size_t len, unsigned cols)
{
    size_t i = 0;
    for (unsigned c = 0; i < len; c++) {
        if (c == cols)
            break;
        i++;
        while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80)
            i++;
    }
    return i;
}

void term_draw(const char *text, size_t len, unsigned cols, unsigned rows)
{
    fputs("\033[H", stdout);
    unsigned row = 0;
    for (const char *p = text, *end = text + len; p < end && (!rows || row < rows); row++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (row)
            fputs("\r\n", stdout); /* never after the last row: no scroll */
        fwrite(p, 1, cols ? cut_columns(p, n, cols) : n, stdout);
        fputs("\033[K", stdout);
        p += n + (nl != NULL);
    }
    fputs("\033[J", stdout);
    fflush(stdout);
}

int term_key(void)
{
    unsigned char ch;
    return read(STDIN_FILENO, &ch, 1) == 1 ? ch : -1;
}
