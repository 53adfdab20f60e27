"""What each VM runs, as the software supply chain sees it: SBOMs and known
vulnerabilities matched offline against OSV advisories.

Owns: ``_distro`` (distribution and package facts from stored results),
``_sbom`` (CycloneDX and SPDX), ``_osv`` (reading an OSV folder),
``_matching`` (packages against advisories), ``_findings`` (findings stored
as history, with their drift).

May import: ``guestpool._errors``, ``guestpool._paths``, ``guestpool.store``.
Never ``rounds``, ``service``, ``nats`` or ``cli``.
"""
