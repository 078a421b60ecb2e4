' wingold NIC reset for Windows XP / 2003, run by the NIC watchdog with cscript.
' Windows 5.x has no command that disables a LAN connection (netsh only resets
' dedicated interfaces there, WMI's Win32_NetworkAdapter.Disable arrived with
' Vista, devcon is not part of Windows), so this drives the Network Connections
' shell folder as a user would, without depending on the display language:
'  1. the virtio NIC's connection name from WMI (Win32_NetworkAdapter whose
'     ServiceName is netkvm: NetConnectionID, NetConnectionStatus);
'  2. that connection in the Network Connections folder (ssfCONNECTIONS, 0x31);
'  3. its first verb: the enable/disable toggle heads a LAN connection's menu in
'     every language; that it did disable is checked through WMI, and only then
'     is the (now first) enable verb run and the connection's return awaited.
' Exit codes: 0 reset; 2 no virtio NIC; 3 no Network Connections folder or no
' such connection in it; 4 the first verb did not disable it (nothing else is
' tried); 5 it did not come back. Each outcome is one line on stdout.
Option Explicit

Const ssfCONNECTIONS = &H31
Const DISCONNECTED = 0

Dim wmi, nic, name, shell, folder, item
Set wmi = GetObject("winmgmts:{impersonationLevel=impersonate}!\\.\root\cimv2")

Function VirtioNic()
  Dim all, n
  Set VirtioNic = Nothing
  On Error Resume Next
  Set all = wmi.ExecQuery("SELECT * FROM Win32_NetworkAdapter WHERE ServiceName = 'netkvm'")
  For Each n In all
    If Not IsNull(n.NetConnectionID) Then
      If n.NetConnectionID <> "" Then
        Set VirtioNic = n
        Exit Function
      End If
    End If
  Next
  On Error Goto 0
End Function

Function Status(id)
  Dim all, n
  Status = -1
  On Error Resume Next
  Set all = wmi.ExecQuery("SELECT * FROM Win32_NetworkAdapter WHERE ServiceName = 'netkvm'")
  For Each n In all
    If n.NetConnectionID = id Then Status = n.NetConnectionStatus
  Next
  On Error Goto 0
End Function

Function FirstVerb(it)
  Dim v
  Set FirstVerb = Nothing
  For Each v In it.Verbs
    If v.Name <> "" Then
      Set FirstVerb = v
      Exit Function
    End If
  Next
End Function

' Waits up to `seconds` for the connection to go down (`down`) or come back.
Function WaitFor(id, down, seconds)
  Dim i, s
  WaitFor = False
  For i = 1 To seconds
    s = Status(id)
    If down And s = DISCONNECTED Then WaitFor = True : Exit Function
    If Not down And s <> DISCONNECTED And s <> -1 Then WaitFor = True : Exit Function
    WScript.Sleep 1000
  Next
End Function

Function Find(f, id)
  Dim it
  Set Find = Nothing
  For Each it In f.Items
    If it.Name = id Then
      Set Find = it
      Exit Function
    End If
  Next
End Function

Set nic = VirtioNic()
If nic Is Nothing Then
  WScript.Echo "wingold nic-reset: no virtio NIC (netkvm) with a connection"
  WScript.Quit 2
End If
name = nic.NetConnectionID

Set shell = CreateObject("Shell.Application")
Set folder = shell.NameSpace(ssfCONNECTIONS)
If folder Is Nothing Then
  WScript.Echo "wingold nic-reset: no Network Connections folder"
  WScript.Quit 3
End If
Set item = Find(folder, name)
If item Is Nothing Then
  WScript.Echo "wingold nic-reset: no connection """ & name & """ in Network Connections"
  WScript.Quit 3
End If

Dim verb
Set verb = FirstVerb(item)
If verb Is Nothing Then
  WScript.Echo "wingold nic-reset: """ & name & """ has no verbs"
  WScript.Quit 4
End If
WScript.Echo "wingold nic-reset: """ & name & """: " & Replace(verb.Name, "&", "")
verb.DoIt
If Not WaitFor(name, True, 30) Then
  WScript.Echo "wingold nic-reset: """ & name & """ did not go down; nothing else tried"
  WScript.Quit 4
End If

' The folder's items are snapshots: look the connection up again for its verbs.
Set item = Find(shell.NameSpace(ssfCONNECTIONS), name)
If item Is Nothing Then
  WScript.Echo "wingold nic-reset: """ & name & """ vanished from Network Connections"
  WScript.Quit 5
End If
Set verb = FirstVerb(item)
If verb Is Nothing Then
  WScript.Echo "wingold nic-reset: """ & name & """ has no verbs once down"
  WScript.Quit 5
End If
WScript.Echo "wingold nic-reset: """ & name & """: " & Replace(verb.Name, "&", "")
verb.DoIt
If Not WaitFor(name, False, 60) Then
  WScript.Echo "wingold nic-reset: """ & name & """ did not come back"
  WScript.Quit 5
End If
WScript.Echo "wingold nic-reset: """ & name & """ reset"
WScript.Quit 0
