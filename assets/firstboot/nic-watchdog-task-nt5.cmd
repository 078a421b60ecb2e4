@echo off
rem wingold step nic-watchdog (Windows XP / 2003): a scheduled task that runs the
rem NIC watchdog every minute as SYSTEM. schtasks on NT 5 wants a start time and
rem has no /f to replace a task, so an old one is deleted first.
schtasks /delete /tn "wingold NIC watchdog" /f >nul 2>&1
schtasks /create /tn "wingold NIC watchdog" /sc minute /mo 1 /st 00:00:00 /ru SYSTEM /tr "cmd /c \"%SystemRoot%\wingold\nic-watchdog.cmd\""
exit /b %errorlevel%
