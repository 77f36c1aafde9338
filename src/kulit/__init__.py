"""kulit: a web-based skin-disease photo classifier that says how sure it is. Not a diagnosis."""

__version__ = "0.1.0"

DISCLAIMER_EN = (
    "kulit is not a diagnosis. It is a research tool that can be wrong; "
    "see a doctor about any skin problem that worries you."
)
DISCLAIMER_ID = (
    "Hasil aplikasi ini bukan diagnosis. Ini alat riset yang bisa salah; "
    "periksakan ke dokter setiap masalah kulit yang mengkhawatirkan Anda."
)
