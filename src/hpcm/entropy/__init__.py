"""hpcm.entropy: GGM likelihood (β = 1.5), quantised CDF tables and the constriction symbol coder."""

from hpcm.entropy.coder import SymbolDecoder, SymbolEncoder, estimate_bits
from hpcm.entropy.ggm import GGM, LowerBound, ggm_cdf, ggm_likelihood
from hpcm.entropy.tables import CdfTable, build_ggm_cdf_table, get_scale_table, scale_to_index

__all__ = [
    "GGM",
    "LowerBound",
    "ggm_cdf",
    "ggm_likelihood",
    "CdfTable",
    "build_ggm_cdf_table",
    "get_scale_table",
    "scale_to_index",
    "SymbolEncoder",
    "SymbolDecoder",
    "estimate_bits",
]
