"""core.artifacts: the tiny bundle loads with everything the app needs, and every kind of broken bundle is refused
with a BundleError that names the problem."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from core.artifacts import (
    BOX_COLUMNS,
    EMBEDDINGS_FILE,
    IMAGE_COLUMNS,
    MANIFEST_FILE,
    MORPHS_FILE,
    NETWORK_FILES,
    SCHEMA_VERSION,
    Bundle,
    NetworkOutputs,
    crop_to_box,
    flip_aligned_mean,
    load_bundle,
    predict_images,
    sha256_file,
    untrained_bundle_labels,
)
from core.atlas import AtlasSpec, atlas_tile
from core.config import YearBin
from core.errors import BundleError
from core.imaging import load_image
from core.models import ImageTransform, Sharpening, save_carnet
from training import build, reshard

BIG_FILES = set(NETWORK_FILES.values())


@pytest.fixture
def bundle_copy(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle; the network files are symlinks (tests replace them, never write into them)."""
    target = tmp_path / "bundle"
    target.mkdir()
    for source in tiny_bundle_dir.iterdir():
        if source.name in BIG_FILES:
            (target / source.name).symlink_to(source)
        elif source.is_dir():
            shutil.copytree(source, target / source.name)
        else:
            shutil.copy2(source, target / source.name)
    return target


def edit_manifest(directory: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((directory / MANIFEST_FILE).read_text())
    change(data)
    (directory / MANIFEST_FILE).write_text(json.dumps(data))


def replace_file(directory: Path, name: str, write: Callable[[Path], None]) -> None:
    """Write a new version of a bundle file and record its sha256, as a (wrong) build would."""
    path = directory / name
    path.unlink()
    write(path)
    edit_manifest(directory, lambda data: data["files"].__setitem__(name, sha256_file(path)))


def refused(directory: Path) -> str:
    with pytest.raises(BundleError) as caught:
        load_bundle(directory)
    return str(caught.value)


def test_tiny_bundle_exposes_what_the_app_needs(tiny_bundle: Bundle):
    bundle = tiny_bundle
    assert len(bundle.year_bins) == 5 and all(isinstance(b, YearBin) for b in bundle.year_bins)
    assert bundle.body_types == ("Hatchback", "SUV", "MPV", "Saloon", "Convertible")
    assert bundle.transform == ImageTransform(64)
    assert (bundle.thresholds.car, bundle.thresholds.frontal) == (0.5, 0.5)
    assert (bundle.valid_views, bundle.segmenter) == ("all", "gate")
    assert bundle.provenance["note"] == "untrained networks (seed 0): for tests only"
    assert all(not net.training for net in (bundle.modernity, bundle.bodytype, bundle.gate))
    assert list(bundle.images.columns) == list(IMAGE_COLUMNS)
    assert len(bundle.images) == 23 and bundle.embeddings.shape == (23, 512)
    assert bundle.embeddings.dtype == np.float16  # stored at half the size; read in float32 where computed with
    assert np.allclose(np.linalg.norm(bundle.unit_embeddings, axis=1), 1.0, atol=1e-5)
    assert bundle.thumbnail(22).size == (32, 32)
    with pytest.raises(IndexError):
        bundle.thumbnail(23)


def test_morphs_cover_the_groups_with_enough_training_members(tiny_bundle: Bundle):
    morphs = tiny_bundle.morphs
    groups = {morphs.group_label(int(b), int(y)) for b, y in zip(morphs.body_type, morphs.year_bin, strict=True)}
    assert groups == {"Hatchback · 2011-2012", "SUV · 2011-2012", "Saloon · 2011-2012"}  # 2011 and 2012 cars
    assert morphs.count.tolist() == [2, 2, 2]
    assert morphs.images.shape == (3, 32, 32, 3) and morphs.images.dtype == np.uint8
    for row in range(len(morphs)):
        values = morphs.typicality_values(row)
        assert len(values) == 2 and np.all(np.diff(values) >= 0) and np.all(values <= 1.0 + 1e-6)


def test_table_agrees_with_the_loaded_networks(tiny_bundle: Bundle, fixture_data_dir: Path):
    """The build rounds the weights as stored, so the table is what the app computes from the loaded bundle."""
    row = tiny_bundle.images.iloc[0]
    frame = Image.open(fixture_data_dir / row["path"]).convert("RGB")
    networks = {"modernity": tiny_bundle.modernity, "bodytype": tiny_bundle.bodytype, "gate": tiny_bundle.gate}
    outputs = predict_images(networks, [crop_to_box(frame, (0, 0, *frame.size))], [frame], tiny_bundle.manifest)
    assert np.allclose(outputs.features[0], tiny_bundle.embeddings[0], rtol=np.finfo(np.float16).eps, atol=1e-6)
    assert outputs.frontal_prob[0] == pytest.approx(row["frontal_prob"], abs=1e-5)
    assert int(outputs.year_logits[0].argmax()) == row["pred_year_bin"]


def test_flip_averaging_scores_the_mean_over_the_crop_and_its_mirror_image(tiny_bundle: Bundle, car_photo):
    """A flip-averaging manifest gives the mean of the outputs on the crop and on the mirrored photo, and its
    logits are the heads' logits of its mean embedding (what typicality and the map use)."""
    flipping = dataclasses.replace(tiny_bundle.manifest, flip_average=True)
    mirrored = ImageOps.mirror(car_photo)

    def outputs(photo: Image.Image, manifest) -> NetworkOutputs:
        return predict_images(tiny_bundle.networks, [photo], [photo], manifest)

    plain, mirror, mean = (outputs(car_photo, tiny_bundle.manifest), outputs(mirrored, tiny_bundle.manifest),
                           outputs(car_photo, flipping))  # fmt: skip
    for name in ("features", "year_logits", "year_head_logits", "body_logits"):
        expected = (getattr(plain, name) + getattr(mirror, name)) / 2
        assert np.allclose(getattr(mean, name), expected, atol=1e-4), name
    assert not np.allclose(mean.features, plain.features, atol=1e-4)
    assert np.array_equal(mean.car_prob, plain.car_prob)  # the gate sees the photo as it is
    heads = tiny_bundle.bodytype.heads["body_type"]
    with torch.no_grad():
        assert np.allclose(heads(torch.from_numpy(mean.features)).numpy(), mean.body_logits, atol=1e-5)


def test_flip_average_is_optional_and_a_boolean(bundle_copy: Path):
    assert not load_bundle(bundle_copy).manifest.flip_average
    edit_manifest(bundle_copy, lambda data: data.pop("flip_average"))
    assert not load_bundle(bundle_copy).manifest.flip_average
    edit_manifest(bundle_copy, lambda data: data.__setitem__("flip_average", True))
    assert load_bundle(bundle_copy).manifest.flip_average
    edit_manifest(bundle_copy, lambda data: data.__setitem__("flip_average", "yes"))
    assert "field 'flip_average' is malformed" in refused(bundle_copy)


def test_sharpening_is_optional_checked_and_reaches_the_crops_alone(bundle_copy: Path, tiny_bundle: Bundle):
    assert tiny_bundle.manifest.sharpening is None and tiny_bundle.transform.sharpening is None
    build.set_sharpening(bundle_copy, Sharpening(120.0))
    bundle = load_bundle(bundle_copy)
    assert bundle.transform.sharpening == Sharpening(120.0, onset=1.0, radius=2.0)
    assert bundle.gate_transform.sharpening is None, "the gate reads whole frames as they are"
    assert bundle.manifest.to_dict()["sharpening"] == {"percent_per_enlargement": 120.0, "onset": 1.0, "radius": 2.0}
    build.set_sharpening(bundle_copy, None)
    assert load_bundle(bundle_copy).manifest.sharpening is None
    for bad in ({"percent_per_enlargement": -5, "onset": 2, "radius": 2}, {"percent_per_enlargement": 50}, "x",
                {"percent_per_enlargement": 50, "onset": 2, "radius": 0}):  # fmt: skip
        edit_manifest(bundle_copy, lambda data, bad=bad: data.__setitem__("sharpening", bad))
        assert "field 'sharpening' is malformed" in refused(bundle_copy), bad


def test_where_the_view_is_read_is_optional_and_checked(bundle_copy: Path, tiny_bundle: Bundle):
    """A manifest without view_from reads the view from the whole frame (bundles built before it); 'crop' needs a
    gate with a view head (the tiny bundle's seed gate has a frontal head), anything else is refused."""
    assert tiny_bundle.manifest.view_from == "frame" and tiny_bundle.manifest.to_dict()["view_from"] == "frame"
    edit_manifest(bundle_copy, lambda data: data.pop("view_from"))
    assert load_bundle(bundle_copy).manifest.view_from == "frame"
    edit_manifest(bundle_copy, lambda data: data.__setitem__("view_from", "crop"))
    assert "view_from 'crop' needs a gate with a view head" in refused(bundle_copy)
    edit_manifest(bundle_copy, lambda data: data.__setitem__("view_from", "mask"))
    assert "view_from must be one of ('frame', 'crop'), got 'mask'" in refused(bundle_copy)


def test_missing_directory_says_how_to_make_a_bundle(tmp_path: Path):
    message = refused(tmp_path / "nowhere")
    assert "No artifact bundle" in message and "python -m training.build" in message


def test_missing_manifest(bundle_copy: Path):
    (bundle_copy / MANIFEST_FILE).unlink()
    assert "no manifest.json" in refused(bundle_copy)


def test_unparseable_manifest(bundle_copy: Path):
    (bundle_copy / MANIFEST_FILE).write_text('{"schema_version": 1,')
    assert "not valid JSON" in refused(bundle_copy)


def test_missing_manifest_field(bundle_copy: Path):
    edit_manifest(bundle_copy, lambda data: data.pop("thresholds"))
    assert "lacks the field 'thresholds'" in refused(bundle_copy)


def test_the_gate_input_size_is_optional_and_checked(bundle_copy: Path, tiny_bundle: Bundle):
    """A manifest without gate_input_size runs the gate at the scores' size; one with it, at its own."""
    assert tiny_bundle.gate_transform == tiny_bundle.transform
    edit_manifest(bundle_copy, lambda data: data.pop("gate_input_size"))
    assert load_bundle(bundle_copy).gate_transform == tiny_bundle.transform
    edit_manifest(bundle_copy, lambda data: data.__setitem__("gate_input_size", 48))
    bundle = load_bundle(bundle_copy)
    assert bundle.gate_transform.size == 48 and bundle.transform == tiny_bundle.transform
    assert bundle.manifest.to_dict()["gate_input_size"] == 48
    for size in (8, 0):
        edit_manifest(bundle_copy, lambda data, size=size: data.__setitem__("gate_input_size", size))
        assert f"gate_input_size {size} is too small" in refused(bundle_copy)


@pytest.mark.parametrize(
    ("beside", "expected"),
    [({"bodytype": "bodytype"}, "not another network"), ({"bodytype": "engine"}, "not another network"),
     ({"bodytype": "gate", "gate": "modernity"}, "which reads one itself")],
)  # fmt: skip
def test_a_network_reads_beside_another_network_that_reads_none(bundle_copy: Path, beside: dict, expected: str):
    def set_beside(data: dict) -> None:
        for key, other in beside.items():
            data["networks"][key]["beside"] = other

    edit_manifest(bundle_copy, set_beside)
    assert f"network 'bodytype' reads beside {beside['bodytype']!r}, {expected}" in refused(bundle_copy)


@pytest.mark.parametrize(("version", "expected"), [(SCHEMA_VERSION + 1, "newer"), (SCHEMA_VERSION - 1, "older")])
def test_unsupported_schema_version(bundle_copy: Path, version: int, expected: str):
    edit_manifest(bundle_copy, lambda data: data.__setitem__("schema_version", version))
    message = refused(bundle_copy)
    assert f"schema version {version}" in message and expected in message


def test_missing_file(bundle_copy: Path):
    (bundle_copy / MORPHS_FILE).unlink()
    assert f"missing file {MORPHS_FILE}" in refused(bundle_copy)


def test_flipped_byte_is_a_hash_mismatch(bundle_copy: Path):
    path = bundle_copy / EMBEDDINGS_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    message = refused(bundle_copy)
    assert EMBEDDINGS_FILE in message and "corrupted" in message


def test_label_count_disagrees_with_head_size(bundle_copy: Path):
    edit_manifest(bundle_copy, lambda data: data["body_types"].pop())
    message = refused(bundle_copy)
    assert "'bodytype'" in message and "4 body types" in message


def test_weights_disagree_with_labels(bundle_copy: Path):
    """Manifest consistent with 4 body types, but the stored weights have a 5-way head."""

    def four_body_types(data: dict) -> None:
        data["body_types"].pop()
        data["networks"]["bodytype"]["heads"]["body_type"] = 4

    edit_manifest(bundle_copy, four_body_types)
    message = refused(bundle_copy)
    assert "bodytype.safetensors" in message and "heads.body_type" in message and "label count" in message


def test_weights_of_the_wrong_network(bundle_copy: Path, tiny_bundle: Bundle):
    replace_file(bundle_copy, NETWORK_FILES["bodytype"], lambda path: save_carnet(tiny_bundle.gate, path))
    assert "bodytype.safetensors" in refused(bundle_copy)


def test_embedding_rows_must_match_image_rows(bundle_copy: Path, tiny_bundle: Bundle):
    replace_file(bundle_copy, EMBEDDINGS_FILE, lambda path: np.save(path, tiny_bundle.embeddings[:-1]))
    message = refused(bundle_copy)
    assert "22 rows" in message and "23" in message


def test_pickled_arrays_are_refused(bundle_copy: Path):
    objects = np.empty(23, dtype=object)
    replace_file(bundle_copy, EMBEDDINGS_FILE, lambda path: np.save(path, objects, allow_pickle=True))
    assert "pickled objects" in refused(bundle_copy)


def test_morph_feature_dimension_is_checked(bundle_copy: Path, tiny_bundle: Bundle):
    morphs = tiny_bundle.morphs

    def write(path: Path) -> None:
        np.savez(
            path,
            features=morphs.features[:, :256],
            body_type=morphs.body_type,
            year_bin=morphs.year_bin,
            count=morphs.count,
            images=morphs.images,
            train_typicality=morphs.train_typicality,
        )

    replace_file(bundle_copy, MORPHS_FILE, write)
    message = refused(bundle_copy)
    assert MORPHS_FILE in message and "features" in message and "(3, 256)" in message


def test_reloaded_bundle_scores_like_the_built_one(bundle_copy: Path, tiny_bundle: Bundle):
    bundle = load_bundle(bundle_copy)
    x = torch.zeros(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(bundle.modernity(x)["year_bin"], tiny_bundle.modernity(x)["year_bin"])
    assert bundle.manifest == tiny_bundle.manifest


def test_morph_images_mirror_cars_to_face_one_side():
    """Half the 'cars' face left, half right: the plain mean is two-headed, the aligned mean has one front."""
    rng = np.random.default_rng(0)
    facing_left = np.zeros((20, 16, 3))
    facing_left[:, :5] = 255
    stack = np.stack(
        [
            np.clip((facing_left if i % 2 else facing_left[:, ::-1]) + rng.normal(0, 20, facing_left.shape), 0, 255)
            for i in range(30)
        ]
    ).astype(np.uint8)
    plain = stack.astype(float).mean(axis=0)
    aligned = flip_aligned_mean(stack)
    assert abs(plain[:, :5].mean() - plain[:, -5:].mean()) < 20
    bright, dark = sorted([aligned[:, :5].mean(), aligned[:, -5:].mean()], reverse=True)
    assert bright > 240 and dark < 15


def test_a_loaded_bundle_memory_maps_its_embeddings(tiny_bundle):
    assert isinstance(tiny_bundle.embeddings, np.memmap) and tiny_bundle.embeddings.dtype == np.float16


def test_loading_decodes_no_atlas_shard(bundle_copy: Path):
    bundle = load_bundle(bundle_copy)
    assert bundle.manifest.atlas.shards == 3, "the tiny bundle's 23 tiles in shards of 8"
    assert bundle.atlas.cache_info().misses == 0
    bundle.thumbnail(9)
    bundle.thumbnail(15)
    assert (bundle.atlas.cache_info().misses, bundle.atlas.cache_info().currsize) == (1, 1), "one shard decoded"


def source_tiles(bundle: Bundle, data_root: Path) -> np.ndarray:
    """The tile the build cut for each row: its car's crop fitted into the atlas tile."""
    labels = untrained_bundle_labels(data_root)
    assert labels["path"].tolist() == bundle.images["path"].tolist()
    return np.stack(
        [
            np.asarray(atlas_tile(crop_to_box(load_image(data_root / row.path), box), bundle.manifest.atlas.tile), int)
            for row, box in zip(labels.itertuples(), labels[list(BOX_COLUMNS)].to_numpy(float), strict=True)
        ]
    )


def one_file_thumbnails(tiles: np.ndarray) -> np.ndarray:
    """The thumbnails the atlas gave before sharding: the tiles in one JPEG of ceil(sqrt(n)) columns, quality 85."""
    count, tile = len(tiles), tiles.shape[1]
    columns = math.ceil(math.sqrt(count))
    image = Image.new("RGB", (columns * tile, -(-count // columns) * tile), (240, 240, 240))
    for i, pixels in enumerate(tiles):
        image.paste(Image.fromarray(pixels.astype(np.uint8)), ((i % columns) * tile, (i // columns) * tile))
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=85)
    decoded = np.asarray(Image.open(encoded).convert("RGB"), dtype=int)
    return np.stack([decoded[i // columns * tile :][:tile, i % columns * tile :][:, :tile] for i in range(count)])


def test_every_thumbnail_is_its_rows_tile_as_before_sharding(tiny_bundle: Bundle, fixture_data_dir: Path):
    tiles = source_tiles(tiny_bundle, fixture_data_dir)
    thumbnails = np.stack([np.asarray(tiny_bundle.thumbnail(i), dtype=int) for i in range(len(tiles))])
    errors = np.abs(thumbnails[:, None] - tiles[None]).mean(axis=(2, 3, 4))  # thumbnail x tile
    assert (errors.argmin(axis=1) == np.arange(len(tiles))).all(), "each thumbnail is closest to its own tile"
    before = one_file_thumbnails(tiles)
    assert np.abs(thumbnails - before).mean(axis=(1, 2, 3)).max() < 0.5, "JPEG's loss, as before (tile edges aside)"
    assert (thumbnails == before).mean() > 0.9


def write_one_file_atlas(directory: Path, bundle: Bundle, columns: int) -> None:
    """The bundle's atlas as bundles before sharding had it: one atlas.jpg, `columns` tiles to a line."""
    tile, count = bundle.manifest.atlas.tile, len(bundle.images)
    image = Image.new("RGB", (columns * tile, -(-count // columns) * tile))
    for i in range(count):
        image.paste(bundle.thumbnail(i), ((i % columns) * tile, (i // columns) * tile))
    image.save(directory / "atlas.jpg", "JPEG", quality=85)
    shutil.rmtree(directory / "atlas")

    def one_file(data: dict) -> None:
        data["atlas"] = {"file": "atlas.jpg", "tile": tile, "columns": columns}
        data["files"] = {k: v for k, v in data["files"].items() if not k.startswith("atlas/")}
        data["files"]["atlas.jpg"] = sha256_file(directory / "atlas.jpg")

    edit_manifest(directory, one_file)


def test_a_bundle_with_a_one_file_atlas_still_loads(bundle_copy: Path, tiny_bundle: Bundle):
    write_one_file_atlas(bundle_copy, tiny_bundle, columns=5)
    bundle = load_bundle(bundle_copy)
    assert bundle.manifest.atlas.to_dict() == {"file": "atlas.jpg", "tile": 32, "columns": 5}
    assert bundle.atlas.cache_info().misses == 0
    decoded = Image.open(bundle_copy / "atlas.jpg").convert("RGB")
    for i in range(len(bundle.images)):
        x, y = (i % 5) * 32, (i // 5) * 32
        assert np.array_equal(np.asarray(bundle.thumbnail(i)), np.asarray(decoded.crop((x, y, x + 32, y + 32))))


def test_the_default_bundle_atlas_layout_reads_back_unchanged():
    """artifacts/default's manifest (one-file or sharded) parses to the atlas layout it records."""
    data = json.loads((Path(__file__).parent.parent / "artifacts" / "default" / MANIFEST_FILE).read_text())
    assert AtlasSpec.from_dict(data["atlas"]).to_dict() == data["atlas"]


def test_missing_atlas_shard(bundle_copy: Path):
    (bundle_copy / "atlas" / "00001.jpg").unlink()
    assert "missing file atlas/00001.jpg" in refused(bundle_copy)


def test_too_small_atlas_shard(bundle_copy: Path):
    replace_file(bundle_copy, "atlas/00002.jpg", lambda path: Image.new("RGB", (128, 32)).save(path, "JPEG"))
    message = refused(bundle_copy)
    assert "atlas/00002.jpg is 128x32 px, too small for 7 tiles of 32 px in 4 columns" in message


def test_atlas_shard_that_is_not_an_image(bundle_copy: Path):
    replace_file(bundle_copy, "atlas/00000.jpg", lambda path: path.write_bytes(b"not a jpeg"))
    assert "atlas/00000.jpg is not a readable image" in refused(bundle_copy)


def test_atlas_with_too_few_shards(bundle_copy: Path):
    edit_manifest(bundle_copy, lambda data: data["atlas"].__setitem__("shards", 2))
    assert "the atlas has 2 shards of 8 tiles, fewer than the 23 tiles" in refused(bundle_copy)


def test_atlas_shard_without_a_hash(bundle_copy: Path):
    edit_manifest(bundle_copy, lambda data: data["files"].pop("atlas/00001.jpg"))
    assert "files lacks the sha256 of ['atlas/00001.jpg']" in refused(bundle_copy)


def test_an_older_bundle_gets_a_sharded_atlas_and_half_size_embeddings_in_place(bundle_copy: Path, tiny_bundle: Bundle):
    write_one_file_atlas(bundle_copy, tiny_bundle, columns=5)
    older = np.asarray(tiny_bundle.embeddings, dtype=np.float32) + np.float32(1e-4)  # not float16 values
    replace_file(bundle_copy, EMBEDDINGS_FILE, lambda path: np.save(path, older))
    before = load_bundle(bundle_copy)
    assert before.embeddings.dtype == np.float32 and np.array_equal(before.embeddings, older)
    expected = [np.asarray(before.thumbnail(i), dtype=int) for i in range(len(before.images))]
    reshard.main(["--bundle", str(bundle_copy)])
    after = load_bundle(bundle_copy)  # validated: every shard is hashed in the manifest
    assert not (bundle_copy / "atlas.jpg").exists() and after.manifest.atlas.file == ""
    assert after.manifest.atlas.shards == 1 and "atlas/00000.jpg" in after.manifest.files
    assert after.manifest.networks == before.manifest.networks and after.manifest.metrics == before.manifest.metrics
    errors = [np.abs(np.asarray(after.thumbnail(i), dtype=int) - e).mean() for i, e in enumerate(expected)]
    assert max(errors) < 3, "the same thumbnails, JPEG-encoded once more"
    assert after.embeddings.dtype == np.float16 and not np.array_equal(after.embeddings, older)
    assert np.allclose(after.embeddings, older, rtol=np.finfo(np.float16).eps, atol=1e-6)
    assert reshard.reshard(bundle_copy) == after.manifest.atlas, "a sharded atlas is left as it is"
    assert reshard.halve_embeddings(bundle_copy) == np.float16 and load_bundle(bundle_copy).manifest == after.manifest
