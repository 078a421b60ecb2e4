@echo off
rem wingold step san-policy (Windows 7 / 2008 R2 and later): disks attached later
rem come online. Server editions keep new disks offline under their default SAN
rem policy (OfflineShared); virt-v2v sets OnlineAll at first boot the same way.
setlocal
set "S=%~dp0san-policy.diskpart"
>"%S%" echo san policy=OnlineAll
diskpart /s "%S%"
set "RC=%errorlevel%"
del "%S%" >nul 2>&1
exit /b %RC%
