@echo off
rem wingold step pnp-drivers (Windows Vista / 2008 and later): installs the staged
rem virtio drivers with pnputil, as virt-v2v does at first boot. 0 = installed,
rem 259 = a better driver is there already, 3010 = installed, reboot needed.
setlocal EnableExtensions EnableDelayedExpansion
set "PNPUTIL=%SystemRoot%\System32\pnputil.exe"
rem A 32-bit runner on 64-bit Windows sees System32 redirected: Sysnative is the real one.
if exist "%SystemRoot%\Sysnative\pnputil.exe" set "PNPUTIL=%SystemRoot%\Sysnative\pnputil.exe"
set "REBOOT=0"
set "FAILED=0"
for %%I in ("%SystemRoot%\Drivers\VirtIO\*.inf") do (
  "!PNPUTIL!" -i -a "%%~fI"
  set "RC=!errorlevel!"
  echo pnputil %%~nxI: exit code !RC!
  if "!RC!"=="3010" set "REBOOT=1"
  if not "!RC!"=="0" if not "!RC!"=="259" if not "!RC!"=="3010" set "FAILED=1"
)
if "!FAILED!"=="1" exit /b 1
if "!REBOOT!"=="1" exit /b 3010
exit /b 0
