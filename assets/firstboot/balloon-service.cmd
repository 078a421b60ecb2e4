@echo off
rem wingold step balloon-service: installs and starts the virtio balloon service
rem (blnsvr -i), which reports guest memory to the host.
"%SystemRoot%\Drivers\VirtIO\blnsvr.exe" -i
exit /b %errorlevel%
