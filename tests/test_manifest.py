import npe2

PLUGIN = "napari-twinvae"


def test_manifest_is_valid():
    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    assert manifest.name == PLUGIN
    assert manifest.display_name


def test_napari_discovers_the_plugin(make_napari_viewer):
    make_napari_viewer()
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert pm.get_manifest(PLUGIN).name == PLUGIN
