"""A read-only table of rows, its columns sized from the rows as they are set."""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

__all__ = ["Cell", "ViewTable"]

Cell = Text | str


def _width(cell: Cell) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


class ViewTable(DataTable[Cell]):
    """Row-cursor table for a view: ``set_rows`` replaces every row at once.

    Column widths are computed here from the cells, not later when the table is
    idle, so the first frame drawn after an update is already laid out right.
    """

    def __init__(self, *headers: str, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.headers = headers

    def on_mount(self) -> None:
        """Show the headers before the first rows arrive."""
        if not self.columns:
            self.set_rows([])

    def set_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]], cursor: int = 0) -> None:
        """Replace the rows (``(key, cells)`` pairs) and put the cursor on row ``cursor``."""
        widths = [cell_len(header) for header in self.headers]
        for _key, cells in rows:
            widths = [max(width, _width(cell)) for width, cell in zip(widths, cells, strict=True)]
        self.clear(columns=True)
        for header, width in zip(self.headers, widths, strict=True):
            self.add_column(header, width=width)
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if rows:
            self.move_cursor(row=min(max(cursor, 0), len(rows) - 1))
