//! The answer files a clone's identity goes into: `unattend.xml` for a sealed
//! NT 6+ golden (computer name, time zone, administrator password encoded as
//! Windows encodes it, OOBE pages skipped, an offline domain join) and an INI
//! key set in NT 5's `sysprep.inf`.

use super::Request;
use crate::unattend::{encode_password, xml_text};

/// The administrator password as an answer file holds it with `PlainText`
/// false (`unattend::encode_password`).
pub fn encode_admin_password(password: &str) -> String {
    encode_password(password, "AdministratorPassword")
}

/// The answer file of a sealed golden's clone: specialize sets the computer name
/// (and time zone); oobeSystem the administrator password and skips the pages a
/// person would click through.
pub(super) fn unattend(arch: &str, computer_name: &str, req: &Request) -> String {
    let arch = match arch {
        "x64" => "amd64",
        other => other,
    };
    let component = |name: &str, body: String| {
        format!(
            "    <component name=\"{name}\" processorArchitecture=\"{arch}\" \
             publicKeyToken=\"31bf3856ad364e35\" language=\"neutral\" versionScope=\"nonSxS\">\n\
             {body}    </component>\n"
        )
    };
    let mut specialize = format!(
        "      <ComputerName>{}</ComputerName>\n",
        xml_text(computer_name)
    );
    if let Some(tz) = &req.timezone {
        specialize += &format!("      <TimeZone>{}</TimeZone>\n", xml_text(tz));
    }
    let mut oobe = String::from(
        "      <OOBE>\n\
         \x20       <HideEULAPage>true</HideEULAPage>\n\
         \x20       <HideOEMRegistrationScreen>true</HideOEMRegistrationScreen>\n\
         \x20       <HideOnlineAccountScreens>true</HideOnlineAccountScreens>\n\
         \x20       <HideWirelessSetupInOOBE>true</HideWirelessSetupInOOBE>\n\
         \x20       <ProtectYourPC>3</ProtectYourPC>\n\
         \x20     </OOBE>\n",
    );
    if let Some(pw) = &req.admin_password {
        oobe += &format!(
            "      <UserAccounts>\n\
             \x20       <AdministratorPassword>\n\
             \x20         <Value>{}</Value>\n\
             \x20         <PlainText>false</PlainText>\n\
             \x20       </AdministratorPassword>\n\
             \x20     </UserAccounts>\n",
            encode_admin_password(&pw.0)
        );
    }
    let join = req
        .domain_join
        .as_ref()
        .map(|blob| {
            component(
                "Microsoft-Windows-UnattendedJoin",
                format!(
                    "      <Identification>\n\
                     \x20       <Provisioning>\n\
                     \x20         <AccountData>{}</AccountData>\n\
                     \x20       </Provisioning>\n\
                     \x20     </Identification>\n",
                    xml_text(&blob.0)
                ),
            )
        })
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <unattend xmlns=\"urn:schemas-microsoft-com:unattend\">\n\
         \x20 <settings pass=\"specialize\">\n{}\x20 </settings>\n\
         \x20 <settings pass=\"oobeSystem\">\n{}\x20 </settings>\n\
         </unattend>\n",
        component("Microsoft-Windows-Shell-Setup", specialize) + &join,
        component("Microsoft-Windows-Shell-Setup", oobe)
    )
}

/// `text` (an INI file, CRLF or LF) with `key=value` set in `[section]`: the
/// key's line replaced where it is, else added at the section's start, else the
/// section added at the end. Other lines are kept as they are.
pub fn set_ini(text: &str, section: &str, key: &str, value: &str) -> String {
    let nl = if text.contains("\r\n") || text.is_empty() {
        "\r\n"
    } else {
        "\n"
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let is_section = |l: &str| l.trim().starts_with('[');
    let named = |l: &str| {
        l.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim()
            .eq_ignore_ascii_case(section)
    };
    let line = format!("{key}={value}");
    match lines.iter().position(|l| is_section(l) && named(l)) {
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|l| is_section(l))
                .map_or(lines.len(), |i| start + 1 + i);
            let at = lines[start + 1..end].iter().position(|l| {
                l.split_once('=')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            });
            match at {
                Some(i) => lines[start + 1 + i] = line,
                None => lines.insert(start + 1, line),
            }
        }
        None => {
            lines.push(format!("[{section}]"));
            lines.push(line);
        }
    }
    let mut out = lines.join(nl);
    out.push_str(nl);
    out
}
