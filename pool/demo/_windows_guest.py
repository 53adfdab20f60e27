"""A Windows guest's bytes: registry hives (SOFTWARE, SYSTEM) of a Windows
Server 2019 and the smallest PE executable, written without Windows."""

from __future__ import annotations

from . import _regf as regf

WIN_DISK_ID = 0x5EED0C0D


WIN_APPS = [("{7C5A40EF-A0FB-4BFC-874A-C0F2E0B9FA8E}", "Microsoft Visual C++ 2019 X64 Runtime",
             "14.29.30133", "Microsoft Corporation", ""),
            ("{23170F69-40C1-2702-2301-000001000000}", "7-Zip 23.01 (x64 edition)", "23.01.00.0",
             "Igor Pavlov", "C:\\Program Files\\7-Zip\\"),
            ("{AC76BA86-7AD7-1033-7B44-AC0F074E4100}", "Adobe Acrobat Reader DC", "23.008.20470",
             "Adobe", "C:\\Program Files\\Adobe\\Reader\\")]


def pe_executable() -> bytes:
    """The smallest file `file` calls "PE32+ executable (console) x86-64"."""
    b = bytearray(1024)
    b[0:2] = b"MZ"
    b[0x3C:0x40] = (0x80).to_bytes(4, "little")
    b[0x80:0x84] = b"PE\0\0"
    b[0x84:0x98] = (0x8664).to_bytes(2, "little") + bytes(14) + (240).to_bytes(2, "little") \
        + (0x22).to_bytes(2, "little")
    b[0x98:0x9A] = (0x20B).to_bytes(2, "little")
    b[0x98 + 68:0x98 + 70] = (3).to_bytes(2, "little")
    return bytes(b)


def windows_hives(c_offset: int) -> tuple[bytes, bytes]:
    """SOFTWARE and SYSTEM hives of a Windows Server 2019 whose C: starts at byte
    ``c_offset`` of the disk with signature WIN_DISK_ID."""
    K = regf.Key
    current = K("CurrentVersion", values={
        "ProductName": "Windows Server 2019 Standard", "CurrentMajorVersionNumber": 10,
        "CurrentMinorVersionNumber": 0, "CurrentVersion": "6.3", "CurrentBuildNumber": "17763",
        "EditionID": "ServerStandard", "InstallationType": "Server",
        "SystemRoot": "C:\\Windows", "PathName": "C:\\Windows"})
    apps = [K(guid, values={"DisplayName": name, "DisplayVersion": ver, "Publisher": pub,
                            "InstallLocation": loc,
                            "UninstallString": regf.Expand("%SystemRoot%\\uninst.exe")})
            for guid, name, ver, pub, loc in WIN_APPS]
    software = regf.hive(K("ROOT", children=[K("Microsoft", children=[
        K("Windows NT", children=[current]),
        K("Windows", children=[K("CurrentVersion", children=[K("Uninstall", children=apps)])])])]))
    mapping = WIN_DISK_ID.to_bytes(4, "little") + c_offset.to_bytes(8, "little")
    cs = K("ControlSet001", children=[
        K("Control", children=[K("ComputerName", children=[
            K("ComputerName", values={"ComputerName": "WIN-CORPUS01"})])]),
        K("Services", children=[K("Tcpip", children=[
            K("Parameters", values={"Hostname": "win-corpus01", "Domain": "",
                                    "SearchList": ["corp.example"]})])])])
    system = regf.hive(K("ROOT", children=[
        K("Select", values={"Current": 1, "Default": 1, "LastKnownGood": 1}), cs,
        K("MountedDevices", values={"\\DosDevices\\C:": mapping})]))
    return software, system
