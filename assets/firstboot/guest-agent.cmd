@echo off
rem wingold step guest-agent: installs the QEMU guest agent from the virtio-win
rem ISO (staged byte for byte as %SystemRoot%\wingold\@MSI@), silently, with a log.
rem It talks to the host over the virtio-serial port org.qemu.guest_agent.0, which
rem wingold's run recipes add (vioserial is staged with it).
msiexec /i "%SystemRoot%\wingold\@MSI@" /qn /norestart /l*v "%SystemRoot%\wingold\qemu-ga-install.log"
set "RC=%errorlevel%"
rem 3010 and 1641: installed, a restart completes it; the runner restarts once.
if "%RC%"=="1641" exit /b 3010
exit /b %RC%
