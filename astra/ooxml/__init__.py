"""The OOXML layer: the one way ASTRA reads and writes Office Open XML packages (.docx).

Modelled on python-docx's ``opc/`` + ``oxml/`` split, with no python-docx dependency. INGEST
reads templates through it; BUILDER and LEARN write and read documents through it.

=============  =================================================================================
``ns``         every namespace URI, relationship type and content type; Clark-name helpers (``W.p``)
``errors``     :class:`PackageError`
``zip``        byte-exact zip reading (every header field) and writing; capped inflate
``xml``        hardened lxml parsing (no DTD, entities, network); Strict -> transitional namespaces
``partname``   the one resolver of relationship targets (refuses escapes); member-name rules
``rels``       relationships and [Content_Types].xml: parse and write
``package``    :class:`Package` (read parts, XML, relationships) and :func:`write_package`
               (deterministic: given member order, fixed timestamps)
``wordml``     where a .docx keeps its stories, styles and theme; small w: accessors
``fields``     every Word field instruction, simple or split across runs and nested
``blocks``     split a story part at its top-level blocks by byte offsets (lossless)
=============  =================================================================================
"""
