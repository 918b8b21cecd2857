"""CCG AutoPackaging QGIS plugin: pick a boundary and datasets, follow the job, load the package.

QGIS calls `classFactory(iface)`; importing this package has no side effects beyond imports.
The plugin imports only qgis, PyQt and the standard library; it talks to the backend over HTTP.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import CcgAutoPackagingPlugin

    return CcgAutoPackagingPlugin(iface)
