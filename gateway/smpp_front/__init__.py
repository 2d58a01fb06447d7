"""The SMPP front: ESMEs bind here, submit messages, query and cancel them, and get receipts.

front.py     SmppFront, the smpp.aio ServerHandler over MessageService
receipts.py  ReceiptSender, the smpp_receipts outbox sent as deliver_sm
"""

from gateway.smpp_front.front import SmppFront
from gateway.smpp_front.receipts import ReceiptSender, message_state, receipt_pdu

__all__ = ["ReceiptSender", "SmppFront", "message_state", "receipt_pdu"]
