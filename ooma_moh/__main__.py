"""``python -m ooma_moh`` is ``ooma-moh``."""

from .cli import main

main(prog_name="ooma-moh")
