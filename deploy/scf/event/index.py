"""SCF event function entry: ``index.main_handler``, SCF's default handler name.

SCF's Python runtime imports ``index`` from the code root and calls
``main_handler(event, context)`` with each API Gateway event; the function itself is
`functions.platforms.scf.main_handler`.
"""

from functions.platforms.scf import main_handler

__all__ = ["main_handler"]
