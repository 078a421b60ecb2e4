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
