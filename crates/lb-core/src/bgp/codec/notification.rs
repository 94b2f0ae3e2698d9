//! NOTIFICATION (RFC 4271 §4.5) with every error code and subcode as enums, and the
//! shutdown communication of Cease/Administrative Shutdown and Reset (RFC 9003).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Error code    | Error subcode |   Data (variable)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Cease / Administrative Shutdown or Reset data (RFC 9003 §2):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Error code 6  |    Subcode    |    Length     |     ...       \
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+               /
//! \                 Shutdown Communication (UTF-8, <= 255) ...    \
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::fmt;

macro_rules! subcode_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            /// A subcode this implementation does not name.
            Other(u8),
        }

        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v {
                    $($value => $name::$variant,)*
                    other => $name::Other(other),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                match v {
                    $($name::$variant => $value,)*
                    $name::Other(other) => other,
                }
            }
        }
    };
}

subcode_enum!(
    /// Message Header Error subcodes (RFC 4271 §4.5).
    HeaderSubcode {
        Unspecific = 0,
        ConnectionNotSynchronized = 1,
        BadMessageLength = 2,
        BadMessageType = 3,
    }
);

subcode_enum!(
    /// OPEN Message Error subcodes (RFC 4271 §4.5, RFC 5492, RFC 9234).
    OpenSubcode {
        Unspecific = 0,
        UnsupportedVersionNumber = 1,
        BadPeerAs = 2,
        BadBgpIdentifier = 3,
        UnsupportedOptionalParameter = 4,
        UnacceptableHoldTime = 6,
        UnsupportedCapability = 7,
        RoleMismatch = 11,
    }
);

subcode_enum!(
    /// UPDATE Message Error subcodes (RFC 4271 §4.5).
    UpdateSubcode {
        Unspecific = 0,
        MalformedAttributeList = 1,
        UnrecognizedWellKnownAttribute = 2,
        MissingWellKnownAttribute = 3,
        AttributeFlagsError = 4,
        AttributeLengthError = 5,
        InvalidOriginAttribute = 6,
        InvalidNextHopAttribute = 8,
        OptionalAttributeError = 9,
        InvalidNetworkField = 10,
        MalformedAsPath = 11,
    }
);

subcode_enum!(
    /// Finite State Machine Error subcodes (RFC 6608).
    FsmSubcode {
        Unspecified = 0,
        UnexpectedMessageInOpenSent = 1,
        UnexpectedMessageInOpenConfirm = 2,
        UnexpectedMessageInEstablished = 3,
    }
);

subcode_enum!(
    /// Cease subcodes (RFC 4486, RFC 8538, RFC 9384).
    CeaseSubcode {
        Unspecific = 0,
        MaximumPrefixesReached = 1,
        AdministrativeShutdown = 2,
        PeerDeconfigured = 3,
        AdministrativeReset = 4,
        ConnectionRejected = 5,
        OtherConfigurationChange = 6,
        ConnectionCollisionResolution = 7,
        OutOfResources = 8,
        HardReset = 9,
        BfdDown = 10,
    }
);

subcode_enum!(
    /// ROUTE-REFRESH Message Error subcodes (RFC 7313 §5).
    RouteRefreshSubcode {
        Reserved = 0,
        InvalidMessageLength = 1,
    }
);

/// Error code and subcode of a NOTIFICATION.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MessageHeader(HeaderSubcode),
    Open(OpenSubcode),
    Update(UpdateSubcode),
    /// Hold Timer Expired (code 4); the subcode is carried for completeness (always 0).
    HoldTimerExpired(u8),
    Fsm(FsmSubcode),
    Cease(CeaseSubcode),
    RouteRefresh(RouteRefreshSubcode),
    Other {
        code: u8,
        subcode: u8,
    },
}

impl ErrorCode {
    pub fn from_octets(code: u8, subcode: u8) -> Self {
        match code {
            1 => ErrorCode::MessageHeader(subcode.into()),
            2 => ErrorCode::Open(subcode.into()),
            3 => ErrorCode::Update(subcode.into()),
            4 => ErrorCode::HoldTimerExpired(subcode),
            5 => ErrorCode::Fsm(subcode.into()),
            6 => ErrorCode::Cease(subcode.into()),
            7 => ErrorCode::RouteRefresh(subcode.into()),
            code => ErrorCode::Other { code, subcode },
        }
    }

    pub fn octets(&self) -> (u8, u8) {
        match *self {
            ErrorCode::MessageHeader(s) => (1, s.into()),
            ErrorCode::Open(s) => (2, s.into()),
            ErrorCode::Update(s) => (3, s.into()),
            ErrorCode::HoldTimerExpired(s) => (4, s),
            ErrorCode::Fsm(s) => (5, s.into()),
            ErrorCode::Cease(s) => (6, s.into()),
            ErrorCode::RouteRefresh(s) => (7, s.into()),
            ErrorCode::Other { code, subcode } => (code, subcode),
        }
    }
}

/// RFC 9003 §2: the shutdown communication is at most 255 octets of UTF-8.
pub const MAX_SHUTDOWN_COMMUNICATION: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notification {
    pub code: ErrorCode,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            data: Vec::new(),
        }
    }

    pub fn with_data(code: ErrorCode, data: Vec<u8>) -> Self {
        Self { code, data }
    }

    pub fn cease(subcode: CeaseSubcode) -> Self {
        Self::new(ErrorCode::Cease(subcode))
    }

    /// Cease / Administrative Shutdown carrying `communication` (RFC 9003), cut at a
    /// character boundary to 255 octets. An empty communication sends length 0.
    pub fn admin_shutdown(communication: &str) -> Self {
        Self::with_communication(CeaseSubcode::AdministrativeShutdown, communication)
    }

    /// Cease / Administrative Reset carrying `communication` (RFC 9003).
    pub fn admin_reset(communication: &str) -> Self {
        Self::with_communication(CeaseSubcode::AdministrativeReset, communication)
    }

    fn with_communication(subcode: CeaseSubcode, communication: &str) -> Self {
        let mut end = communication.len().min(MAX_SHUTDOWN_COMMUNICATION);
        while !communication.is_char_boundary(end) {
            end -= 1;
        }
        let text = &communication.as_bytes()[..end];
        let mut data = Vec::with_capacity(1 + text.len());
        data.push(text.len() as u8);
        data.extend_from_slice(text);
        Self::with_data(ErrorCode::Cease(subcode), data)
    }

    /// The RFC 9003 shutdown communication of a Cease / Administrative Shutdown or Reset.
    /// `None` for other codes, an absent communication, or one that is malformed (length
    /// beyond the data, or not UTF-8: RFC 9003 §3 says to treat it as absent).
    pub fn shutdown_communication(&self) -> Option<&str> {
        match self.code {
            ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
            | ErrorCode::Cease(CeaseSubcode::AdministrativeReset) => {}
            _ => return None,
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..len as usize)?;
        std::str::from_utf8(text).ok().filter(|s| !s.is_empty())
    }

    pub(crate) fn decode_body(body: &[u8]) -> Self {
        // The caller checked body.len() >= 2.
        let code = ErrorCode::from_octets(body[0], body[1]);
        Self::with_data(code, body[2..].to_vec())
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        let (code, subcode) = self.code.octets();
        out.push(code);
        out.push(subcode);
        out.extend_from_slice(&self.data);
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, subcode) = self.code.octets();
        match self.code {
            ErrorCode::MessageHeader(s) => write!(f, "message header error: {s:?}")?,
            ErrorCode::Open(s) => write!(f, "OPEN message error: {s:?}")?,
            ErrorCode::Update(s) => write!(f, "UPDATE message error: {s:?}")?,
            ErrorCode::HoldTimerExpired(_) => write!(f, "hold timer expired")?,
            ErrorCode::Fsm(s) => write!(f, "finite state machine error: {s:?}")?,
            ErrorCode::Cease(s) => write!(f, "cease: {s:?}")?,
            ErrorCode::RouteRefresh(s) => write!(f, "ROUTE-REFRESH message error: {s:?}")?,
            ErrorCode::Other { .. } => write!(f, "error")?,
        }
        write!(f, " ({code}/{subcode})")?;
        if let Some(text) = self.shutdown_communication() {
            write!(f, ": {text:?}")?;
        }
        Ok(())
    }
}
