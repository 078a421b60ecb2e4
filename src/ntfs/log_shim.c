/*
 * libntfs-3g logs through a printf-style handler taking a va_list, which Rust cannot
 * receive portably. This shim formats the message and hands the text to Rust.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#define HAVE_STDINT_H 1
#include <ntfs-3g/types.h>
#include <ntfs-3g/logging.h>

extern void wingold_ntfs_log(unsigned int level, const char *function, const char *text);

static int wingold_log_handler(const char *function, const char *file, int line,
			       u32 level, void *data, const char *format, va_list args)
{
	char text[1024];
	int n;

	(void)file;
	(void)line;
	(void)data;
	n = vsnprintf(text, sizeof(text), format, args);
	wingold_ntfs_log(level, function ? function : "", text);
	return n;
}

void wingold_ntfs_install_log_handler(void)
{
	ntfs_log_set_handler(wingold_log_handler);
	ntfs_log_set_levels(NTFS_LOG_LEVEL_CRITICAL | NTFS_LOG_LEVEL_ERROR |
			    NTFS_LOG_LEVEL_PERROR | NTFS_LOG_LEVEL_WARNING);
	ntfs_log_clear_levels(NTFS_LOG_LEVEL_DEBUG | NTFS_LOG_LEVEL_TRACE |
			      NTFS_LOG_LEVEL_VERBOSE | NTFS_LOG_LEVEL_QUIET |
			      NTFS_LOG_LEVEL_INFO | NTFS_LOG_LEVEL_PROGRESS);
}

/*
 * libntfs-3g stamps what it creates (file times, a folder's change time, MFT change
 * times) with clock_gettime(CLOCK_REALTIME). Golden images must be byte-identical
 * for the same inputs, so while wingold writes a volume the clock libntfs-3g reads
 * can be frozen at a time taken from the inputs. This definition interposes the C
 * library's for the whole process (as faketime-style preloads do); every clock but
 * a frozen CLOCK_REALTIME goes straight to the kernel.
 */
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static volatile long long wingold_frozen_seconds = -1;

void wingold_ntfs_freeze_clock(long long seconds)
{
	wingold_frozen_seconds = seconds;
}

int clock_gettime(clockid_t clock, struct timespec *ts)
{
	long long frozen = wingold_frozen_seconds;

	if (clock == CLOCK_REALTIME && frozen >= 0) {
		ts->tv_sec = (time_t)frozen;
		ts->tv_nsec = 0;
		return 0;
	}
	return (int)syscall(SYS_clock_gettime, clock, ts);
}
