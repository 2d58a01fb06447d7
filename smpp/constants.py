"""SMPP 3.4 codes as IntEnums (SMPP 3.4 section 5).

Fields of decoded PDUs hold plain ints (an IntEnum compares equal to its
value), so these enums are for building PDUs and for reading code, not a
conversion the codec pays for on every field.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

RESPONSE_BIT = 0x80000000
HEADER_LENGTH = 16
INTERFACE_VERSION = 0x34


class CommandId(IntEnum):
    """SMPP 3.4 section 5.1.2.1."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class CommandStatus(IntEnum):
    """SMPP 3.4 section 5.1.3 (ESME_ prefix dropped)."""

    ROK = 0x00000000
    RINVMSGLEN = 0x00000001
    RINVCMDLEN = 0x00000002
    RINVCMDID = 0x00000003
    RINVBNDSTS = 0x00000004
    RALYBND = 0x00000005
    RINVPRTFLG = 0x00000006
    RINVREGDLVFLG = 0x00000007
    RSYSERR = 0x00000008
    RINVSRCADR = 0x0000000A
    RINVDSTADR = 0x0000000B
    RINVMSGID = 0x0000000C
    RBINDFAIL = 0x0000000D
    RINVPASWD = 0x0000000E
    RINVSYSID = 0x0000000F
    RCANCELFAIL = 0x00000011
    RREPLACEFAIL = 0x00000013
    RMSGQFUL = 0x00000014
    RINVSERTYP = 0x00000015
    RINVNUMDESTS = 0x00000033
    RINVDLNAME = 0x00000034
    RINVDESTFLAG = 0x00000040
    RINVSUBREP = 0x00000042
    RINVESMCLASS = 0x00000043
    RCNTSUBDL = 0x00000044
    RSUBMITFAIL = 0x00000045
    RINVSRCTON = 0x00000048
    RINVSRCNPI = 0x00000049
    RINVDSTTON = 0x00000050
    RINVDSTNPI = 0x00000051
    RINVSYSTYP = 0x00000053
    RINVREPFLAG = 0x00000054
    RINVNUMMSGS = 0x00000055
    RTHROTTLED = 0x00000058
    RINVSCHED = 0x00000061
    RINVEXPIRY = 0x00000062
    RINVDFTMSGID = 0x00000063
    RX_T_APPN = 0x00000064
    RX_P_APPN = 0x00000065
    RX_R_APPN = 0x00000066
    RQUERYFAIL = 0x00000067
    RINVOPTPARSTREAM = 0x000000C0
    ROPTPARNOTALLWD = 0x000000C1
    RINVPARLEN = 0x000000C2
    RMISSINGOPTPARAM = 0x000000C3
    RINVOPTPARAMVAL = 0x000000C4
    RDELIVERYFAILURE = 0x000000FE
    RUNKNOWNERR = 0x000000FF


# Statuses after which resending the same message later, possibly over another
# route, can succeed (smpp-facts: Kannel re-queues on 0x58, 0x14 and 0x08;
# 0x45 is vendor-dependent and treated as temporary too).
TEMPORARY_STATUSES: frozenset[int] = frozenset(
    {
        CommandStatus.RSYSERR,
        CommandStatus.RMSGQFUL,
        CommandStatus.RTHROTTLED,
        CommandStatus.RSUBMITFAIL,
    }
)


class Ton(IntEnum):
    """Type of number, SMPP 3.4 section 5.2.5."""

    UNKNOWN = 0
    INTERNATIONAL = 1
    NATIONAL = 2
    NETWORK_SPECIFIC = 3
    SUBSCRIBER_NUMBER = 4
    ALPHANUMERIC = 5
    ABBREVIATED = 6


class Npi(IntEnum):
    """Numbering plan indicator, SMPP 3.4 section 5.2.6."""

    UNKNOWN = 0
    ISDN = 1  # E.163 / E.164
    DATA = 3  # X.121
    TELEX = 4  # F.69
    LAND_MOBILE = 6  # E.212
    NATIONAL = 8
    PRIVATE = 9
    ERMES = 10
    INTERNET = 14  # IP
    WAP = 18  # WAP client id


class DataCoding(IntEnum):
    """data_coding, SMPP 3.4 section 5.2.19."""

    DEFAULT = 0x00  # SMSC default alphabet, GSM 03.38 in practice
    IA5 = 0x01
    BINARY_8BIT_A = 0x02
    LATIN_1 = 0x03
    BINARY = 0x04
    JIS = 0x05
    CYRILLIC = 0x06
    HEBREW = 0x07
    UCS2 = 0x08
    PICTOGRAM = 0x09
    ISO_2022_JP = 0x0A
    EXTENDED_KANJI = 0x0D
    KS_C_5601 = 0x0E


class MessageState(IntEnum):
    """message_state, SMPP 3.4 section 5.3.2.35 (SCHEDULED and SKIPPED from 5.0)."""

    SCHEDULED = 0
    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8
    SKIPPED = 9


FINAL_MESSAGE_STATES: frozenset[int] = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.EXPIRED,
        MessageState.DELETED,
        MessageState.UNDELIVERABLE,
        MessageState.UNKNOWN,
        MessageState.REJECTED,
        MessageState.SKIPPED,
    }
)


class EsmClass(IntFlag):
    """esm_class bits that matter to a gateway, SMPP 3.4 section 5.2.12."""

    DEFAULT = 0x00
    DATAGRAM_MODE = 0x01
    FORWARD_MODE = 0x02
    STORE_AND_FORWARD = 0x03
    DELIVERY_RECEIPT = 0x04  # message type: SMSC delivery receipt
    DELIVERY_ACK = 0x08
    MANUAL_ACK = 0x10
    CONVERSATION_ABORT = 0x18
    INTERMEDIATE_NOTIFICATION = 0x20
    UDHI = 0x40  # short_message starts with a user data header
    REPLY_PATH = 0x80


# Mask of the "message type" bits 5-2 of esm_class.
ESM_CLASS_TYPE_MASK = 0x3C


class RegisteredDelivery(IntFlag):
    """registered_delivery, SMPP 3.4 section 5.2.17."""

    NONE = 0x00
    RECEIPT_ALWAYS = 0x01  # on success or failure
    RECEIPT_ON_FAILURE = 0x02
    INTERMEDIATE = 0x10


RECEIPT_MASK = 0x03
