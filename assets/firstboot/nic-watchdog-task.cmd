@echo off
rem wingold step nic-watchdog (Windows Vista / 2008 and later): a scheduled task
rem that runs the NIC watchdog every minute as SYSTEM.
schtasks /create /tn "wingold NIC watchdog" /sc minute /mo 1 /ru SYSTEM /tr "cmd /c \"%SystemRoot%\wingold\nic-watchdog.cmd\"" /f
exit /b %errorlevel%
