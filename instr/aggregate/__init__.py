"""In-target aggregations on the host side: snapshot model, decoding, reports."""

from instr.aggregate.model import AggRow, AggSnapshot, AggTable, Bucket

__all__ = ["AggRow", "AggSnapshot", "AggTable", "Bucket"]
