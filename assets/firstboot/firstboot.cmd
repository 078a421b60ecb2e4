@echo off
rem wingold first-boot runner: runs the scripts in queue\ once, in name order.
rem   exit code 0     done: moved to done\
rem   exit code 3010  done, and asks for a reboot: moved to done\, the machine
rem                   restarts, the queue goes on at the next boot
rem   anything else   failed: tried again at the next boot (the queue stops here
rem                   for this boot, later scripts may need this one); after the
rem                   third failure moved to failed\ and the queue goes on
rem Nothing reboots unless a script asks. With the queue empty the runner disables
rem its own service. Everything is logged, with a timestamp, to log.txt.
setlocal EnableExtensions EnableDelayedExpansion
set "ROOT=%~dp0"
set "ROOT=%ROOT:~0,-1%"
set "LOG=%ROOT%\log.txt"
set "MAXTRIES=3"
if not defined WINGOLD_REBOOT set "WINGOLD_REBOOT=shutdown -r -t 10 -c wingold-first-boot"
if not defined WINGOLD_DISABLE set "WINGOLD_DISABLE=sc config wingold-firstboot start= disabled"
if not exist "%ROOT%\done" mkdir "%ROOT%\done"
if not exist "%ROOT%\failed" mkdir "%ROOT%\failed"
call :log "runner started as %USERNAME%"
set "STOP=0"
for /f "delims=" %%F in ('dir /b /a-d /on "%ROOT%\queue\*.cmd" 2^>nul') do (
  if "!STOP!"=="0" call :run "%%F"
)
if "!STOP!"=="1" exit /b 0
call :log "queue empty: disabling the wingold-firstboot service"
%WINGOLD_DISABLE% >>"%LOG%" 2>&1
exit /b 0

:run
set "NAME=%~1"
set "TRIES=0"
if exist "%ROOT%\queue\%NAME%.tries" set /p TRIES=<"%ROOT%\queue\%NAME%.tries"
set /a TRIES=TRIES+1
>"%ROOT%\queue\%NAME%.tries" echo !TRIES!
call :log "start %NAME% (attempt !TRIES! of %MAXTRIES%)"
pushd "%ROOT%\queue"
cmd /c ""%ROOT%\queue\%NAME%"" >>"%LOG%" 2>&1
set "RC=!errorlevel!"
popd
call :log "end %NAME%: exit code !RC!"
if "!RC!"=="0" goto :done
if "!RC!"=="3010" goto :reboot
if !TRIES! GEQ %MAXTRIES% goto :give_up
call :log "%NAME% failed: tried again at the next boot"
set "STOP=1"
goto :eof

:done
move /y "%ROOT%\queue\%NAME%" "%ROOT%\done\" >nul
del "%ROOT%\queue\%NAME%.tries" >nul 2>&1
goto :eof

:reboot
move /y "%ROOT%\queue\%NAME%" "%ROOT%\done\" >nul
del "%ROOT%\queue\%NAME%.tries" >nul 2>&1
call :log "%NAME% asks for a reboot: restarting"
%WINGOLD_REBOOT% >>"%LOG%" 2>&1
set "STOP=1"
goto :eof

:give_up
move /y "%ROOT%\queue\%NAME%" "%ROOT%\failed\" >nul
move /y "%ROOT%\queue\%NAME%.tries" "%ROOT%\failed\" >nul
call :log "%NAME% failed %MAXTRIES% times: moved to failed\, going on"
goto :eof

:log
>>"%LOG%" echo %DATE% %TIME% %~1
goto :eof
