"""Argument masking shared by the relation corpora (ChemProt, DDI)."""

from __future__ import annotations


def mask_pair(text: str, first: tuple[int, int, str], second: tuple[int, int, str], overlap_mask: str) -> str:
    """Replace two spans ``(start, end, mask)`` (end exclusive) by their masks, or both by ``overlap_mask``
    when they overlap. As in BLUE's scripts, spans whose closed intervals meet count as overlapping.

    >>> mask_pair("Aspirin inhibits COX-1.", (17, 22, "@GENE$"), (0, 7, "@CHEMICAL$"), "@CHEM-GENE$")
    '@CHEMICAL$ inhibits @GENE$.'
    >>> mask_pair("the GABA receptor", (4, 8, "@CHEMICAL$"), (4, 17, "@GENE$"), "@CHEM-GENE$")
    'the @CHEM-GENE$'
    """
    (s1, e1, m1), (s2, e2, m2) = sorted([first, second])
    if s2 <= e1:
        return text[:s1] + overlap_mask + text[max(e1, e2) :]
    return text[:s1] + m1 + text[e1:s2] + m2 + text[e2:]
