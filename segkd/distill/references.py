"""The code each method's defaults follow: repository and file(s), shown by ``segkd methods``."""
from __future__ import annotations

REFERENCES: dict[str, str] = {
    "logits_kd": "winycg/CIRKD losses/kd.py (T 1 on the logits before upsampling); irfanICMLL/"
                 "structure_knowledge_distillation utils/criterion.py (pixel-wise); source_exact: the PSPNet "
                 "knowledge-distillation repository",
    "feature_kd": "winycg/CIRKD losses/fitnet.py with at=head, mapping=conv (the default stage3, where "
                  "PSPNet's aux head sits, is segkd's choice)",
    "cwd": "irfanICMLL/TorchDistiller SemSeg-distill/utils/criterion.py (logits, τ 4, weight 3); "
           "mapping=auto_conv: winycg/CIRKD losses/cwd.py",
    "skd": "irfanICMLL/structure_knowledge_distillation networks/kd_model.py, utils/train_options.py, "
           "utils/criterion.py",
    "ifvd": "YukangWang/IFVD utils/criterion.py (CriterionIFV), options.py (λ_ifv 200)",
    "dist": "hunto/DIST_KD segmentation/losses/dist_kd.py, segmentation/train_kd.py",
    "cirkd": "winycg/CIRKD losses/cirkd_mini_batch.py, losses/cirkd_memory.py, train_cirkd.py "
             "(contrast sizes // classes + 1)",
    "afdcd": "OSVAI/Af-DCD losses/ocmgd.py, train_scripts/cityscape/deeplabv3_r101_deeplabv3_r18_ocmgd.sh",
    "tfkd": "yuanli2333/Teacher-free-Knowledge-Distillation my_loss_function.py (the binary T of reg is "
            "segkd's choice)",
    "frskd": "MingiJi/FRSKD segmentation/main.py, segmentation/utils/BiFPN.py, segmentation/utils/distill.py",
    "byot": "luanyunteng/pytorch-be-your-own-teacher train.py, models/resnet.py (hint on pooled features); "
            "the authors' ArchipLab-LinfengZhang/pytorch-self-distillation-final train.py has no hint",
    "dhm": "d-li14/DHM models/cifar/resnet.py, cifar.py",
    "sad": "the paper (Hou et al., ICCV 2019); the authors' ENet-SAD is Torch7 code in "
           "cardwing/Codes-for-Lane-Detection",
    "dks": "sundw2014/DKS wrn_DKS/resnet.py (fresh branches), wrn_DKS/main.py (every pair, weight 1)",
    "pspsd": "none public: a reconstruction from the paper's abstract and Wang et al. 2022",
    "skd_full": "irfanICMLL/structure_knowledge_distillation networks/kd_model.py, utils/train_options.py "
                "(λ_pi 10, λ_pa 1, λ_d 0.1)",
    "ifvd_full": "YukangWang/IFVD networks/kd_model.py, options.py (λ_kd 10, λ_adv 0.001, λ_d 0.1, Adam D)",
}
