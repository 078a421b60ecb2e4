//! The images a Windows imaging file (`install.wim`, or `install.esd`) holds, from
//! its header and XML resource alone: the 208-byte header names where the XML is,
//! and the XML (UTF-16, never compressed) lists each image's index, name and
//! Windows properties. Nothing else of the file is read.

use super::Error;
use std::path::Path;

/// The header's size and first bytes.
pub const HEADER: usize = 208;
const MAGIC: &[u8; 8] = b"MSWIM\0\0\0";
/// Where the XML resource's header is in the file header, and its flag for a
/// compressed resource (wimlib `include/wimlib/header.h`, `resource.h`).
const XML_RESHDR: usize = 0x48;
const RESHDR_COMPRESSED: u8 = 0x04;
/// XML read at most (a Windows 11 install.wim's is ~30 KiB for 11 images).
const MAX_XML: u64 = 4 << 20;

/// One image of a WIM: what `wiminfo` lists of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Image {
    /// From 1, as `/IMAGE/INDEX` counts.
    pub index: u32,
    /// `/IMAGE/NAME`, what an answer file's `/IMAGE/NAME` matches.
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// `WINDOWS/EDITIONID`, e.g. ServerDatacenter.
    pub edition_id: Option<String>,
    /// `WINDOWS/ARCH`: 0 x86, 9 x64, 12 ARM64 (PROCESSOR_ARCHITECTURE_*).
    pub arch: Option<u32>,
    /// `WINDOWS/VERSION`: major, minor, build.
    pub version: Option<(u32, u32, u32)>,
    /// `WINDOWS/INSTALLATIONTYPE`: Client, Server, Server Core.
    pub installation_type: Option<String>,
}

/// Where the XML resource is: (offset, bytes), from the file's first `HEADER`
/// bytes; `file` names it in errors, `size` is the file's size.
pub fn xml_extent(header: &[u8], size: u64, file: &Path) -> Result<(u64, u64), Error> {
    let bad = |reason: String| Error::NotWim {
        path: file.to_owned(),
        reason,
    };
    if header.len() < HEADER || &header[..8] != MAGIC {
        return Err(bad("no MSWIM header".into()));
    }
    let r = &header[XML_RESHDR..XML_RESHDR + 24];
    let mut stored = [0u8; 8];
    stored[..7].copy_from_slice(&r[..7]);
    let stored = u64::from_le_bytes(stored);
    let flags = r[7];
    let offset = u64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
    let original = u64::from_le_bytes(r[16..24].try_into().expect("8 bytes"));
    if flags & RESHDR_COMPRESSED != 0 || stored != original {
        return Err(bad(
            "its XML is compressed, which no WIM Windows ships has".into()
        ));
    }
    if original == 0 || original > MAX_XML || original % 2 != 0 {
        return Err(bad(format!("an XML resource of {original} bytes")));
    }
    if offset.checked_add(original).is_none_or(|end| end > size) {
        return Err(bad("its XML resource runs past the end".into()));
    }
    Ok((offset, original))
}

/// The images the XML resource's bytes (UTF-16LE, with or without its BOM) list,
/// in index order.
pub fn images(xml: &[u8], file: &Path) -> Result<Vec<Image>, Error> {
    let bad = |reason: String| Error::NotWim {
        path: file.to_owned(),
        reason,
    };
    let units: Vec<u16> = xml
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let units = units.strip_prefix(&[0xfeff]).unwrap_or(&units);
    let text = String::from_utf16(units).map_err(|_| bad("its XML is not UTF-16".into()))?;
    let root = xml::parse(&text).map_err(|why| bad(format!("its XML does not parse: {why}")))?;
    if root.name != "WIM" {
        return Err(bad(format!("its XML is <{}>, not <WIM>", root.name)));
    }
    let mut out = Vec::new();
    for image in root.children.iter().filter(|c| c.name == "IMAGE") {
        let index = image
            .attr("INDEX")
            .and_then(|i| i.parse::<u32>().ok())
            .filter(|&i| i > 0)
            .ok_or_else(|| bad("an <IMAGE> without a valid INDEX".into()))?;
        let text = |path: &[&str]| image.find(path).map(|e| e.text.trim().to_owned());
        let number = |path: &[&str]| text(path).and_then(|t| t.parse::<u32>().ok());
        let version = match (
            number(&["WINDOWS", "VERSION", "MAJOR"]),
            number(&["WINDOWS", "VERSION", "MINOR"]),
            number(&["WINDOWS", "VERSION", "BUILD"]),
        ) {
            (Some(a), Some(b), Some(c)) => Some((a, b, c)),
            _ => None,
        };
        out.push(Image {
            index,
            name: text(&["NAME"]).unwrap_or_default(),
            display_name: text(&["DISPLAYNAME"]),
            description: text(&["DESCRIPTION"]),
            edition_id: text(&["WINDOWS", "EDITIONID"]),
            arch: number(&["WINDOWS", "ARCH"]),
            version,
            installation_type: text(&["WINDOWS", "INSTALLATIONTYPE"]),
        });
    }
    out.sort_by_key(|i| i.index);
    if out.windows(2).any(|w| w[0].index == w[1].index) {
        return Err(bad("two images with one INDEX".into()));
    }
    Ok(out)
}

/// The little XML a WIM holds: elements, attributes, text, the five entities and
/// numeric references; no DTD. Depth and size are bounded by the caller's cap.
mod xml {
    #[derive(Debug, Default)]
    pub struct Element {
        pub name: String,
        pub attrs: Vec<(String, String)>,
        pub children: Vec<Element>,
        pub text: String,
    }

    impl Element {
        pub fn attr(&self, name: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        /// The first element down `path` of child names.
        pub fn find(&self, path: &[&str]) -> Option<&Element> {
            match path.split_first() {
                None => Some(self),
                Some((first, rest)) => self
                    .children
                    .iter()
                    .find(|c| c.name == *first)
                    .and_then(|c| c.find(rest)),
            }
        }
    }

    const MAX_DEPTH: usize = 32;

    pub fn parse(text: &str) -> Result<Element, String> {
        let mut stack: Vec<Element> = vec![Element::default()];
        let mut rest = text;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                push_text(&mut stack, rest)?;
                break;
            };
            push_text(&mut stack, &rest[..lt])?;
            rest = &rest[lt..];
            if let Some(after) = rest.strip_prefix("<?") {
                rest = skip_past(after, "?>")?;
            } else if let Some(after) = rest.strip_prefix("<!--") {
                rest = skip_past(after, "-->")?;
            } else if rest.starts_with("<!") {
                return Err("a DTD or CDATA section".into());
            } else if let Some(after) = rest.strip_prefix("</") {
                let end = after.find('>').ok_or("an unclosed end tag")?;
                let name = after[..end].trim();
                let done = stack.pop().ok_or("an end tag too many")?;
                if done.name != name || stack.is_empty() {
                    return Err(format!("</{name}> closes <{}>", done.name));
                }
                stack.last_mut().expect("checked").children.push(done);
                rest = &after[end + 1..];
            } else {
                let end = rest.find('>').ok_or("an unclosed tag")?;
                let inner = &rest[1..end];
                let (inner, empty) = match inner.strip_suffix('/') {
                    Some(i) => (i, true),
                    None => (inner, false),
                };
                let element = start_tag(inner)?;
                if empty {
                    stack
                        .last_mut()
                        .expect("never empty")
                        .children
                        .push(element);
                } else {
                    if stack.len() > MAX_DEPTH {
                        return Err("nested too deep".into());
                    }
                    stack.push(element);
                }
                rest = &rest[end + 1..];
            }
        }
        let mut top = stack.pop().expect("never empty");
        if !stack.is_empty() {
            return Err(format!("<{}> is not closed", top.name));
        }
        if top.children.len() != 1 {
            return Err("not one root element".into());
        }
        Ok(top.children.remove(0))
    }

    fn skip_past<'a>(text: &'a str, end: &str) -> Result<&'a str, String> {
        text.find(end)
            .map(|i| &text[i + end.len()..])
            .ok_or_else(|| format!("no {end}"))
    }

    fn push_text(stack: &mut [Element], raw: &str) -> Result<(), String> {
        let top = stack.last_mut().expect("never empty");
        if stack_is_document(top) {
            return if raw.trim().is_empty() {
                Ok(())
            } else {
                Err("text outside the root element".into())
            };
        }
        top.text.push_str(&unescape(raw)?);
        Ok(())
    }

    fn stack_is_document(e: &Element) -> bool {
        e.name.is_empty()
    }

    fn start_tag(inner: &str) -> Result<Element, String> {
        let inner = inner.trim();
        let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
        let name = &inner[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "_-.:".contains(c))
        {
            return Err(format!("a tag named {name:?}"));
        }
        let mut attrs = Vec::new();
        let mut rest = inner[name_end..].trim_start();
        while !rest.is_empty() {
            let eq = rest.find('=').ok_or("an attribute without a value")?;
            let key = rest[..eq].trim().to_owned();
            let after = rest[eq + 1..].trim_start();
            let quote = after
                .chars()
                .next()
                .filter(|q| *q == '"' || *q == '\'')
                .ok_or("an unquoted attribute")?;
            let close = after[1..].find(quote).ok_or("an unclosed attribute")?;
            attrs.push((key, unescape(&after[1..1 + close])?));
            rest = after[close + 2..].trim_start();
        }
        Ok(Element {
            name: name.to_owned(),
            attrs,
            ..Element::default()
        })
    }

    fn unescape(raw: &str) -> Result<String, String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            let semi = rest[amp..].find(';').ok_or("an unfinished entity")?;
            let entity = &rest[amp + 1..amp + semi];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let code = if let Some(hex) = entity.strip_prefix("#x") {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(dec) = entity.strip_prefix('#') {
                        dec.parse().ok()
                    } else {
                        None
                    };
                    code.and_then(char::from_u32)
                        .ok_or_else(|| format!("the entity &{entity};"))?
                }
            };
            out.push(c);
            rest = &rest[amp + semi + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str) -> Vec<u8> {
        std::iter::once(0xfeffu16)
            .chain(text.encode_utf16())
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    #[test]
    fn images_are_read_with_their_windows_properties() {
        let xml = "<WIM><TOTALBYTES>1</TOTALBYTES>\
            <IMAGE INDEX=\"2\"><NAME>B &amp; C</NAME><WINDOWS><ARCH>9</ARCH>\
            <VERSION><MAJOR>10</MAJOR><MINOR>0</MINOR><BUILD>20348</BUILD></VERSION>\
            </WINDOWS></IMAGE><IMAGE INDEX='1'><NAME>A</NAME></IMAGE></WIM>";
        let got = images(&utf16(xml), Path::new("x.wim")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].index, got[0].name.as_str()), (1, "A"));
        assert_eq!(got[1].name, "B & C");
        assert_eq!(got[1].arch, Some(9));
        assert_eq!(got[1].version, Some((10, 0, 20348)));
    }

    #[test]
    fn broken_xml_is_an_error() {
        for xml in [
            "<WIM><IMAGE INDEX=\"1\"></WIM>",
            "<WIM><IMAGE></IMAGE></WIM>",
            "<WIM><IMAGE INDEX=\"1\"/><IMAGE INDEX=\"1\"/></WIM>",
            "<WIM>&bogus;</WIM>",
            "<NOTWIM/>",
            "text",
            "<WIM></WIM><WIM></WIM>",
        ] {
            assert!(images(&utf16(xml), Path::new("x.wim")).is_err(), "{xml}");
        }
    }
}
