@echo off
rem wingold step tcpip-netsh (Windows Vista / 2008 and later): the TCP tuning for
rem virtio-net that has no registry form (linux-kvm.org, WindowsGuestDrivers/kvmnet).
netsh int tcp set heuristics wsh=disabled forcews=enabled
if errorlevel 1 netsh int tcp set heuristics disabled
netsh int tcp set global autotuninglevel=disabled
exit /b %errorlevel%
