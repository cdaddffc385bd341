//! A new room nobody can guess, and the words that bring the other person
//! into it: the command for the app and the link for a browser.
//!
//! A room name is the only thing between a stranger and a call (`duet serve`
//! has no accounts), so a caller started without `--room` makes one with 80
//! random bits: 16 characters of Crockford's base 32 in four groups
//! (`k7m2-q9xd-3fhw-8rtn`), lower case, without the letters that read like
//! digits (i, l, o, u), so it can be read aloud or pasted.

use duet_signal::RoleRequest;

/// Crockford's base 32, lower case.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A room name of 80 random bits (`docs/cli.md`, `--room`).
pub fn new_room_name() -> String {
    room_name_from(rand::random())
}

/// The room name of these 80 bits: 16 digits of 5 bits, in groups of four.
fn room_name_from(bits: [u8; 10]) -> String {
    let mut value = bits.iter().fold(0u128, |acc, &b| acc << 8 | u128::from(b));
    let mut digits = [0u8; 16];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    digits
        .chunks(4)
        .map(|group| group.iter().map(|&b| char::from(b)).collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// How the other person joins a call in `room` on `server`, where this end
/// asked for `role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    server: String,
    room: String,
    /// The subcommand the other person runs.
    other: &'static str,
}

impl Invitation {
    /// The invitation to the other end of a call this end joins as `role`.
    pub fn new(server: &str, room: &str, role: RoleRequest) -> Invitation {
        let other = match role {
            RoleRequest::Caller => "callee",
            RoleRequest::Callee => "caller",
            RoleRequest::Auto => "call",
        };
        Invitation {
            server: server.to_owned(),
            room: room.to_owned(),
            other,
        }
    }

    /// The exact command that joins the call from another machine.
    pub fn command(&self) -> String {
        format!(
            "duet {} --server {} --room {}",
            self.other, self.server, self.room
        )
    }

    /// The browser page's address for the call: the server's own page
    /// (`http` for `ws`, `https` for `wss`), or `None` for a server address
    /// that is not a WebSocket URL.
    pub fn browser_link(&self) -> Option<String> {
        let (scheme, rest) = if let Some(rest) = self.server.strip_prefix("wss://") {
            ("https", rest)
        } else {
            ("http", self.server.strip_prefix("ws://")?)
        };
        let base = rest
            .strip_suffix("/ws")
            .unwrap_or(rest)
            .trim_end_matches('/');
        Some(format!("{scheme}://{base}/?room={}", self.room))
    }

    /// Both, one per line: what "copy" puts on the clipboard.
    pub fn text(&self) -> String {
        match self.browser_link() {
            Some(link) => format!("{}\n{link}", self.command()),
            None => self.command(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_room_name_is_80_bits_in_four_readable_groups() {
        let name = room_name_from([0xff; 10]);
        assert_eq!(name, "zzzz-zzzz-zzzz-zzzz");
        assert_eq!(room_name_from([0; 10]), "0000-0000-0000-0000");
        // The last byte lands in the last two digits: nothing is cut off.
        assert_eq!(
            room_name_from([0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            "0000-0000-0000-0001"
        );
        assert_eq!(
            room_name_from([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "g000-0000-0000-0000"
        );
    }

    #[test]
    fn new_room_names_are_valid_and_differ() {
        let names: Vec<String> = (0..100).map(|_| new_room_name()).collect();
        for name in &names {
            duet_signal::protocol::RoomName::parse(name).expect("a valid room name");
            assert_eq!(name.len(), 19);
            assert!(!name.contains(['i', 'l', 'o', 'u']), "{name}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn the_invitation_names_the_other_role_the_server_and_the_room() {
        let invitation = Invitation::new("ws://10.0.0.2:8787", "k7m2-q9xd", RoleRequest::Caller);
        assert_eq!(
            invitation.command(),
            "duet callee --server ws://10.0.0.2:8787 --room k7m2-q9xd"
        );
        assert_eq!(
            invitation.browser_link().as_deref(),
            Some("http://10.0.0.2:8787/?room=k7m2-q9xd")
        );
        assert_eq!(
            invitation.text(),
            "duet callee --server ws://10.0.0.2:8787 --room k7m2-q9xd\nhttp://10.0.0.2:8787/?room=k7m2-q9xd"
        );
        let auto = Invitation::new("ws://h:1", "r", RoleRequest::Auto);
        assert!(auto.command().starts_with("duet call --server"));
        let callee = Invitation::new("ws://h:1", "r", RoleRequest::Callee);
        assert!(callee.command().starts_with("duet caller --server"));
    }

    #[test]
    fn the_link_follows_tls_and_a_path_behind_a_proxy() {
        let link = |server: &str| Invitation::new(server, "r", RoleRequest::Caller).browser_link();
        assert_eq!(
            link("wss://duet.example/ws").as_deref(),
            Some("https://duet.example/?room=r")
        );
        assert_eq!(
            link("wss://example.org/duet/ws").as_deref(),
            Some("https://example.org/duet/?room=r")
        );
        assert_eq!(
            link("ws://h:8787/").as_deref(),
            Some("http://h:8787/?room=r")
        );
        assert_eq!(link("h:8787"), None);
    }
}
