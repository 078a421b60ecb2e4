@echo off
rem wingold NIC watchdog (Windows XP / 2003 and later), run every minute by the
rem scheduled task "wingold NIC watchdog" as SYSTEM: pings the target (the default
rem gateway unless one was configured); after @LIMIT@ failures in a row it resets
rem the virtio NIC (netkvm) and writes a warning to the System event log.
setlocal EnableExtensions EnableDelayedExpansion
set "STATE=%~dp0nic-watchdog.failures"
set "TARGET=@TARGET@"
set "LIMIT=@LIMIT@"
if "!TARGET!"=="" (
  for /f "tokens=1-3" %%a in ('route print 0.0.0.0') do (
    if "%%a"=="0.0.0.0" if "%%b"=="0.0.0.0" if not defined GW set "GW=%%c"
  )
  set "TARGET=!GW!"
)
if "!TARGET!"=="" exit /b 0
ping -n 2 -w 2000 !TARGET! | find "TTL=" >nul
if not errorlevel 1 (
  >"%STATE%" echo 0
  exit /b 0
)
set "N=0"
if exist "%STATE%" set /p N=<"%STATE%"
set /a N=N+1
>"%STATE%" echo !N!
if !N! LSS %LIMIT% exit /b 0
>"%STATE%" echo 0
eventcreate /t WARNING /id 100 /l SYSTEM /so wingold-nic-watchdog /d "!TARGET! unreachable !N! times in a row: resetting the virtio NIC" >nul 2>&1
rem Windows XP / 2003 (wingold staged nic-reset.vbs beside this script): the
rem Network Connections folder's disable and enable, driven by Windows Script Host.
if exist "%~dp0nic-reset.vbs" (
  cscript //nologo "%~dp0nic-reset.vbs" >>"%~dp0nic-watchdog.log" 2>&1
  exit /b !errorlevel!
)
rem Windows 8 / 2012 and later: the NetAdapter cmdlets.
if exist "%SystemRoot%\System32\WindowsPowerShell\v1.0\Modules\NetAdapter" (
  powershell.exe -NoProfile -NonInteractive -Command "Get-NetAdapter | Where-Object { $_.DriverFileName -eq 'netkvm.sys' } | Restart-NetAdapter -Confirm:$false"
  exit /b !errorlevel!
)
rem Vista / 2008 / 7 / 2008 R2: the connection's name from WMI, then netsh.
for /f "skip=1 tokens=*" %%n in ('wmic nic where "ServiceName='netkvm'" get NetConnectionID') do (
  set "NAME=%%n"
  for /f "tokens=*" %%t in ("!NAME!") do set "NAME=%%t"
  if not "!NAME!"=="" (
    netsh interface set interface name="!NAME!" admin=disabled
    netsh interface set interface name="!NAME!" admin=enabled
  )
)
exit /b 0
