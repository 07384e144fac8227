"""RecBole datasets with item modality features."""

from __future__ import annotations

import os

import pandas as pd
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data.dataset import Dataset
from recbole.utils import FeatureSource, FeatureType

from recbole_promptmm.data.atomic import atomic_files, check_atomic_files, find_token
from recbole_promptmm.data.features import load_modality_features, parse_modality_specs
from recbole_promptmm.data.mmrec import COLUMNS, SPLITS, check_item_rows, feature_rows, mmrec_inter_path, \
    read_mmrec_inter
from recbole_promptmm.registry import get_model


class MultimodalDataset(Dataset):
    """RecBole's ``Dataset`` plus ``modality_features``: modality name -> float32 tensor
    [item_num, d_m] in internal item-id order (row 0, the padding item, is zero); and interactions in MMRec's
    layout when ``mmrec_inter_file`` is set (:mod:`recbole_promptmm.data.mmrec`: the split comes from its
    ``x_label`` column, through RecBole's fixed-split path).

    Feature specs and files are checked before the interactions are read; alignment is checked once the
    item ids are known. Copies made by ``build()`` share the same tensors.
    """

    def __init__(self, config) -> None:
        self._modality_specs = parse_modality_specs(config["modality_features"], config["data_path"])
        mmrec_path = mmrec_inter_path(config)
        self._mmrec = None
        if mmrec_path is not None:
            self._mmrec = read_mmrec_inter(mmrec_path, config["field_separator"] or "\t")
            for spec in self._modality_specs:
                if spec.path is not None and spec.id_map is None:
                    check_item_rows(self._mmrec[0], mmrec_path, feature_rows(spec.path), spec.path)
        self._largest_item_token = None
        super().__init__(config)
        tokens = self.field2id_token[self.iid_field][1:]
        item_file = os.path.join(self.dataset_path, f"{self.dataset_name}.item")
        self.modality_features = load_modality_features(self._modality_specs, tokens, item_file,
                                                        self._largest_item_token, self._locate_item)

    def _data_filtering(self):
        """RecBole's filtering, after noting the largest integer item token read (a feature matrix may hold rows up
        to it, even when filtering drops that item)."""
        frames = [f for f in (self.inter_feat, self.item_feat) if f is not None and self.iid_field in f]
        largest = [pd.to_numeric(f[self.iid_field], errors="coerce").max() for f in frames]
        largest = [v for v in largest if pd.notna(v)]
        self._largest_item_token = int(max(largest)) if largest else None
        super()._data_filtering()

    def _locate_item(self, token: str) -> str | None:
        """Where the data files first hold item ``token`` (an error message's "x.inter line 7, column 2")."""
        mmrec = mmrec_inter_path(self.config)
        if mmrec is not None:
            return find_token([mmrec], "itemID", token, self.config["field_separator"] or "\t")
        return find_token(atomic_files(self.config), self.iid_field, token, self.config["field_separator"] or "\t",
                          self.config["encoding"] or "utf-8")

    def _get_preset(self):
        super()._get_preset()
        if self._mmrec is not None:
            self.benchmark_filename_list = list(SPLITS)  # RecBole's fixed split: no filtering, build() cuts

    def _load_inter_feat(self, token, dataset_path):
        if self._mmrec is None:
            return super()._load_inter_feat(token, dataset_path)
        frame, sizes = self._mmrec
        fields = {}
        for column, (key, ftype) in COLUMNS.items():
            if column in frame and self.config[key]:
                fields[column] = self.config[key]
                feature_type = FeatureType.TOKEN if ftype == "token" else FeatureType.FLOAT
                self.field2source[self.config[key]] = FeatureSource.INTERACTION
                self.field2type[self.config[key]] = feature_type
                self.field2seqlen[self.config[key]] = 1
                if feature_type == FeatureType.FLOAT:
                    self.field2bucketnum[self.config[key]] = 2
        self.inter_feat, self.file_size_list = frame[list(fields)].rename(columns=fields), list(sizes)
        self._mmrec = None  # the frame now lives in inter_feat

    def __str__(self) -> str:
        info = [super().__str__()]
        for name, feat in self.modality_features.items():
            info.append(f"Modality [{name}]: {tuple(feat.shape)}")
        return "\n".join(info)


def check_dataset_folder(config) -> None:
    """Fail before RecBole tries to download a dataset whose folder is missing (we are often offline)."""
    path = config["data_path"]
    name = config["dataset"]
    mmrec = mmrec_inter_path(config)
    if mmrec is not None and not os.path.isfile(mmrec):
        raise FileNotFoundError(f"mmrec_inter_file {mmrec} does not exist (pass --data_path=DIR where DIR holds "
                                f"the {name}/ folder with it)")
    if mmrec is not None:
        return
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"dataset folder {path} does not exist; pass --data_path=DIR where DIR holds a {name}/ folder "
            "with RecBole atomic files (no download is attempted)"
        )
    benchmark = config["benchmark_filename"]
    expected = [f"{name}.{part}.inter" for part in benchmark] if benchmark else [f"{name}.inter"]
    missing = [f for f in expected if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise FileNotFoundError(f"dataset folder {path}: expected {', '.join(expected)}, missing {', '.join(missing)}")


def create_dataset(config):
    """Like RecBole's ``create_dataset``; a :class:`MultimodalDataset` when ``modality_features`` or
    ``mmrec_inter_file`` is set."""
    check_dataset_folder(config)
    check_atomic_files(config)
    if not config["modality_features"] and getattr(get_model(config["model"]), "needs_modality_features", False):
        raise ValueError(
            f"{config['model']} needs item modality features, but dataset {config['dataset']!r} has none: add "
            "`modality_features: {image: image_feat.npy, ...}` (one .npy file per modality, row k = item token k) "
            "to its dataset yaml or a --config_files yaml"
        )
    if config["modality_features"] or config["mmrec_inter_file"]:
        return MultimodalDataset(config)
    return recbole_create_dataset(config)
