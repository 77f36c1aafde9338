"""Every UI string in Bahasa Indonesia and English, plus the lay texts of the conditions.

Templates never hold words of their own: they call `t(key)`, so adding a language is one more
dictionary here and one more block per class in conditions.json.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from kulit import DISCLAIMER_EN, DISCLAIMER_ID

LANGS = ("id", "en")
LANG_COOKIE = "lang"
CONDITIONS_FILE = Path(__file__).with_name("conditions.json")

STRINGS: dict[str, dict[str, str]] = {
    "id": {
        "lang_name": "Bahasa Indonesia",
        "tagline": "Cek foto kondisi kulit. Bukan diagnosis.",
        "skip_link": "Langsung ke isi",
        "nav_label": "Navigasi utama",
        "nav_home": "Periksa foto",
        "nav_about": "Tentang model",
        "lang_label": "Bahasa",
        "disclaimer": DISCLAIMER_ID,
        "not_diagnosis": "Bukan diagnosis",
        "footer_model": "Model: {model}",
        # upload page
        "index_title": "Periksa foto masalah kulit",
        "index_intro": "Ambil atau pilih foto bagian kulit yang jelas, dekat, dan terang. kulit "
                       "memperkirakan kondisi mana yang paling mirip dan seberapa yakin model itu.",
        "upload_label": "Foto kulit",
        "upload_help": "JPEG, PNG, WebP atau BMP, maksimal {mb} MB. Seret dan lepas foto ke "
                       "sini, pilih berkas, atau ambil foto dengan kamera ponsel.",
        "pick_file": "Pilih foto",
        "take_photo": "Ambil foto dengan kamera",
        "drop_here": "Lepaskan foto di sini",
        "preview_alt": "Pratinjau foto yang dipilih",
        "submit": "Periksa foto",
        "submitting": "Memeriksa…",
        "privacy": "Foto Anda diproses di memori server dan tidak disimpan.",
        "tips_title": "Tips foto yang baik",
        "tip_1": "Cahaya terang, sebaiknya cahaya siang, tanpa lampu kilat.",
        "tip_2": "Dekatkan kamera sampai bercak mengisi sebagian besar foto, dan pastikan tajam.",
        "tip_3": "Satu bercak per foto.",
        "classes_intro": "kulit hanya mengenal {n} kondisi ini:",
        "error_title": "Ada masalah dengan berkas",
        # errors (server and browser)
        "err_not_image": "Berkas ini bukan gambar yang didukung. Pilih foto (JPEG, PNG, WebP "
                         "atau BMP).",
        "err_unreadable": "Gambar ini tidak bisa dibaca; mungkin rusak atau tidak lengkap. "
                          "Coba foto lain.",
        "err_too_large": "Foto ini terlalu besar (batas {mb} MB). Pilih foto yang lebih kecil.",
        "err_too_small": "Gambar ini kosong atau terlalu kecil.",
        "err_missing_field": "Pilih foto terlebih dahulu.",
        "err_bad_request": "Unggahan tidak lengkap. Coba lagi.",
        # result page
        "result_title": "Hasil",
        "verdict_likely": "Foto ini paling mirip dengan {name}: perkiraan {pct}.",
        "verdict_uncertain": "Model tidak yakin. Tidak ada kondisi yang cukup cocok untuk "
                             "disebutkan sebagai jawaban.",
        "uncertain_why": "Ini bisa terjadi karena foto buram atau gelap, kondisi yang tidak "
                         "dikenal kulit, atau kulit yang sehat. Kemungkinan di bawah ini hanya "
                         "untuk gambaran.",
        "see_doctor_title": "Segera periksakan ke dokter",
        "see_doctor_melanoma": "Foto ini paling mirip dengan melanoma, sejenis kanker kulit yang "
                               "serius. Hanya dokter yang bisa memastikannya. Periksakan ke "
                               "dokter, sebaiknya dokter spesialis kulit, dalam satu sampai dua "
                               "minggu ke depan.",
        "see_doctor_uncertain": "Karena model tidak yakin, mintalah dokter atau tenaga kesehatan "
                                "(misalnya di puskesmas) memeriksa kulit Anda segera.",
        "see_doctor_urgent": "Foto ini paling mirip dengan {name}. Periksakan ke dokter segera.",
        "top_title": "{n} kondisi yang paling mirip",
        "urgent_badge": "periksakan ke dokter",
        "pct_note": "Persentase adalah perkiraan model seberapa mungkin setiap kondisi, di antara "
                    "{n} kondisi yang dikenalnya. Perkiraan ini bisa salah.",
        "photo_title": "Yang dilihat model",
        "photo_alt": "Foto Anda, dipotong menjadi persegi yang dilihat model",
        "heatmap_alt": "Foto Anda dengan peta panas: warna merah dan kuning menandai area yang "
                       "paling memengaruhi jawaban model",
        "heatmap_toggle": "Tampilkan peta panas",
        "heatmap_note": "Area merah dan kuning paling memengaruhi jawaban utama model. Ini "
                        "menunjukkan ke mana model melihat, bukan letak penyakitnya.",
        "heatmap_none": "Peta panas tidak tersedia untuk model ini.",
        "conditions_title": "Tentang kondisi-kondisi ini",
        "cond_what": "Apa itu",
        "cond_signs": "Tanda-tanda umum",
        "cond_contagious": "Menular?",
        "cond_next": "Yang perlu dilakukan",
        "cond_unknown": "Belum ada keterangan untuk kondisi ini. Tanyakan ke dokter atau tenaga "
                        "kesehatan.",
        "again": "Periksa foto lain",
        "lang_result_note": "Mengganti bahasa membuka halaman unggah; hasil ini tidak disimpan.",
        # about page
        "about_title": "Tentang model",
        "about_intro": "kulit adalah alat riset yang memperkirakan kondisi kulit dari sebuah "
                       "foto. Halaman ini menjelaskan model yang sedang dipakai, dari kartu "
                       "modelnya.",
        "about_model": "Model",
        "about_id": "Nama",
        "about_backbone": "Jaringan",
        "about_input": "Ukuran masukan",
        "about_threshold": "Jika jawaban teratas di bawah {pct}, kulit mengatakan tidak yakin "
                           "alih-alih menyebut satu kondisi.",
        "about_classes": "Kondisi yang dikenal",
        "about_data": "Data pelatihan",
        "about_data_name": "Data",
        "about_source": "Sumber",
        "about_licence": "Lisensi",
        "about_data_none": "Kartu model tidak menyebutkan data pelatihannya.",
        "about_metrics": "Hasil uji",
        "about_metrics_intro": "Diukur pada foto uji yang tidak dipakai untuk pelatihan.",
        "about_metrics_none": "Kartu model tidak memuat hasil uji.",
        "about_metric": "Ukuran",
        "about_value": "Nilai",
        "about_ci": "Selang 95%",
        "m_n": "Jumlah foto uji",
        "m_accuracy": "Akurasi (foto uji yang dijawab benar)",
        "m_balanced_accuracy": "Akurasi seimbang (rata-rata per kondisi)",
        "m_macro_f1": "Macro F1 (rata-rata per kondisi)",
        "m_top3_accuracy": "Jawaban benar ada di 3 teratas",
        "m_ece": "Galat kalibrasi (ECE, makin kecil makin baik)",
        "about_limits": "Keterbatasan yang diketahui",
        "about_limits_lang": "Keterbatasan berikut ditulis dalam bahasa Inggris di kartu model.",
        "about_limits_none": "Kartu model tidak mencantumkan keterbatasan; itu tidak berarti "
                             "tidak ada.",
        "about_api": "Untuk program: API JSON di /api/v1/predict, dokumentasi di /docs.",
        # 404
        "not_found_title": "Halaman tidak ditemukan",
        "not_found_text": "Halaman ini tidak ada.",
        # how it works (explain.html, _explain_link.html)
        "ex_title": "Cara kerjanya",
        "ex_button": "Cara kerjanya: lihat angka-angkanya",
        "ex_button_note": "Mengirim foto persegi yang sama sekali lagi untuk dihitung ulang; "
                          "tidak ada yang disimpan.",
        "ex_intro": "Makalah yang mendasari kulit menjelaskan CNN dengan contoh perhitungan pada "
                    "potongan 4x4 piksel sebuah foto. Berikut langkah yang sama pada foto Anda, "
                    "lalu apa yang dihitung model sebenarnya untuk foto ini.",
        "ex_photo_title": "1. Potongan 4x4 piksel dari foto Anda",
        "ex_photo_alt": "Foto persegi yang dilihat model, dengan potongan 4x4 piksel ditandai",
        "ex_photo_note": "Persegi ini adalah foto yang dilihat model ({size}x{size} piksel). "
                         "Kotak kecil menandai potongan di tengah, mulai dari x={x}, y={y}.",
        "ex_patch_text": "Setiap piksel adalah tiga angka dari 0 sampai 255: merah, hijau, "
                         "dan biru.",
        "ex_red": "Merah",
        "ex_green": "Hijau",
        "ex_blue": "Biru",
        "ex_swatch": "Warnanya",
        "ex_kernel_title": "2. Kernel (filter)",
        "ex_kernel_text": "Kernel 3x3 digeser di atas setiap kanal, satu piksel setiap kali "
                          "(stride 1, tanpa padding). Kernel contoh dari makalah ini bereaksi "
                          "jika kecerahan berubah dari kiri ke kanan: sebuah tepi tegak.",
        "ex_conv_title": "3. Konvolusi, per kanal",
        "ex_conv_text": "Setiap angka adalah jumlah hasil kali jendela 3x3 dengan kernel, sel "
                        "demi sel. Potongan 4x4 menghasilkan 2x2 angka.",
        "ex_sum_title": "4. Jumlah ketiga kanal",
        "ex_relu_title": "5. ReLU: angka negatif menjadi 0",
        "ex_flatten_title": "6. Flatten: tabel menjadi satu baris",
        "ex_model_intro": "Langkah 1–6 memakai kernel contoh dari makalah pada satu potongan. "
                          "Model sebenarnya ({backbone}) melakukan hal yang sama dengan kernel "
                          "hasil belajarnya, pada seluruh foto {size}x{size}, dalam banyak "
                          "lapisan.",
        "ex_layer_title": "7. Lapisan konvolusi pertama model",
        "ex_layer_text": "Lapisan ini punya {n} filter; masing-masing menghasilkan peta {h}x{w} "
                         "dari foto Anda (stride {stride}). Bagian terang berarti filter itu "
                         "bereaksi kuat di sana.",
        "ex_layer_paper": "Contoh di makalah menyebut {paper} filter; lapisan pertama model ini "
                          "punya {n}.",
        "ex_grid_alt": "{n} peta fitur abu-abu, satu untuk setiap filter lapisan pertama",
        "ex_heatmap_title": "8. Ke mana model melihat",
        "ex_softmax_title": "9. Dari skor ke probabilitas (softmax)",
        "ex_softmax_text": "Lapisan terakhir memberi satu skor z (logit) untuk setiap kondisi. "
                           "kulit membagi setiap skor dengan suhu T = {temp}, yang disetel pada "
                           "foto validasi agar persentasenya jujur, lalu p = exp(z/T) dibagi "
                           "jumlah semua exp(z/T).",
        "ex_shift_note": "Setiap z/T terlebih dahulu dikurangi nilai terbesarnya ({shift}); "
                         "hasil p tetap sama dan exp tidak meluap.",
        "ex_col_condition": "Kondisi",
        "ex_col_sum": "Jumlah",
        "ex_answer_title": "10. Jawaban",
        "ex_threshold": "Jika kondisi teratas di bawah {pct}, kulit menyatakan tidak yakin.",
        "ex_check": "Angka-angka ini sama dengan halaman hasil (selisih terbesar {diff}).",
        "ex_timing": "Dihitung dalam {ms} ms.",
    },
    "en": {
        "lang_name": "English",
        "tagline": "Photo check for skin conditions. Not a diagnosis.",
        "skip_link": "Skip to content",
        "nav_label": "Main navigation",
        "nav_home": "Check a photo",
        "nav_about": "About the model",
        "lang_label": "Language",
        "disclaimer": DISCLAIMER_EN,
        "not_diagnosis": "Not a diagnosis",
        "footer_model": "Model: {model}",
        "index_title": "Check a photo of a skin problem",
        "index_intro": "Take or choose a clear, close, well-lit photo of the skin. kulit "
                       "estimates which condition it looks most like and how sure the model is.",
        "upload_label": "Photo of the skin",
        "upload_help": "JPEG, PNG, WebP or BMP, up to {mb} MB. Drag and drop a photo here, "
                       "choose a file, or take a photo with your phone camera.",
        "pick_file": "Choose a photo",
        "take_photo": "Take a photo with the camera",
        "drop_here": "Drop the photo here",
        "preview_alt": "Preview of the chosen photo",
        "submit": "Check photo",
        "submitting": "Checking…",
        "privacy": "Your photo is processed in the server's memory and is not saved.",
        "tips_title": "Tips for a good photo",
        "tip_1": "Bright light, daylight if possible, no flash.",
        "tip_2": "Get close so the spot fills most of the photo, and make sure it is sharp.",
        "tip_3": "One spot per photo.",
        "classes_intro": "kulit only knows these {n} conditions:",
        "error_title": "There is a problem with the file",
        "err_not_image": "This file is not a supported image. Please choose a photo (JPEG, PNG, "
                         "WebP or BMP).",
        "err_unreadable": "This image could not be read; it may be damaged or incomplete. "
                          "Please try another photo.",
        "err_too_large": "This photo is too large (limit {mb} MB). Please choose a smaller one.",
        "err_too_small": "This image is empty or too small.",
        "err_missing_field": "Please choose a photo first.",
        "err_bad_request": "The upload was incomplete. Please try again.",
        "result_title": "Result",
        "verdict_likely": "The photo looks most like {name}: an estimated {pct}.",
        "verdict_uncertain": "The model is not sure. No condition fits well enough to name "
                             "one as the answer.",
        "uncertain_why": "This can happen with a blurry or dark photo, a condition kulit does "
                         "not know, or healthy skin. The possibilities below are only a guide.",
        "see_doctor_title": "See a doctor soon",
        "see_doctor_melanoma": "The photo looks most like melanoma, a serious skin cancer. Only "
                               "a doctor can tell. Please see a doctor, ideally a skin "
                               "specialist, within the next one to two weeks.",
        "see_doctor_uncertain": "Because the model is not sure, please have a doctor or health "
                                "worker look at your skin soon.",
        "see_doctor_urgent": "The photo looks most like {name}. Please see a doctor soon.",
        "top_title": "The {n} closest conditions",
        "urgent_badge": "see a doctor",
        "pct_note": "The percentages are the model's estimate of how likely each condition is, "
                    "among the {n} it knows. They can be wrong.",
        "photo_title": "What the model looked at",
        "photo_alt": "Your photo, cropped to the square the model looked at",
        "heatmap_alt": "Your photo with a heatmap: red and yellow mark the areas that most "
                       "influenced the model's answer",
        "heatmap_toggle": "Show heatmap",
        "heatmap_note": "Red and yellow areas influenced the model's top answer the most. This "
                        "shows where the model looked, not where the disease is.",
        "heatmap_none": "No heatmap is available for this model.",
        "conditions_title": "About these conditions",
        "cond_what": "What it is",
        "cond_signs": "Typical signs",
        "cond_contagious": "Contagious?",
        "cond_next": "What to do next",
        "cond_unknown": "There is no description for this condition yet. Ask a doctor or "
                        "health worker.",
        "again": "Check another photo",
        "lang_result_note": "Switching language opens the upload page; this result is not saved.",
        "about_title": "About the model",
        "about_intro": "kulit is a research tool that estimates a skin condition from a photo. "
                       "This page describes the model in use, from its model card.",
        "about_model": "Model",
        "about_id": "Name",
        "about_backbone": "Network",
        "about_input": "Input size",
        "about_threshold": "When the top answer is below {pct}, kulit says it is not sure "
                           "instead of naming a condition.",
        "about_classes": "Conditions it knows",
        "about_data": "Training data",
        "about_data_name": "Data",
        "about_source": "Source",
        "about_licence": "Licence",
        "about_data_none": "The model card does not describe its training data.",
        "about_metrics": "Test results",
        "about_metrics_intro": "Measured on test photos not used in training.",
        "about_metrics_none": "The model card holds no test results.",
        "about_metric": "Measure",
        "about_value": "Value",
        "about_ci": "95% interval",
        "m_n": "Test photos",
        "m_accuracy": "Accuracy (test photos answered correctly)",
        "m_balanced_accuracy": "Balanced accuracy (average per condition)",
        "m_macro_f1": "Macro F1 (average per condition)",
        "m_top3_accuracy": "Right answer among the top 3",
        "m_ece": "Calibration error (ECE, lower is better)",
        "about_limits": "Known limits",
        "about_limits_lang": "",
        "about_limits_none": "The model card lists no limits; that does not mean there are none.",
        "about_api": "For programs: the JSON API is at /api/v1/predict, documentation at /docs.",
        "not_found_title": "Page not found",
        "not_found_text": "This page does not exist.",
        "ex_title": "How it works",
        "ex_button": "How it works: see the numbers",
        "ex_button_note": "Sends the same square photo once more to recompute it; nothing is "
                          "saved.",
        "ex_intro": "The paper behind kulit explains a CNN with a worked example on a 4x4 "
                    "pixel patch of a photo. Here are the same steps on your photo, then what "
                    "the real model computed for it.",
        "ex_photo_title": "1. A 4x4 pixel patch of your photo",
        "ex_photo_alt": "The square photo the model saw, with the 4x4 pixel patch marked",
        "ex_photo_note": "The square is the photo the model saw ({size}x{size} pixels). The "
                         "small box marks the patch in the centre, starting at x={x}, y={y}.",
        "ex_patch_text": "Every pixel is three numbers from 0 to 255: red, green and blue.",
        "ex_red": "Red",
        "ex_green": "Green",
        "ex_blue": "Blue",
        "ex_swatch": "Its colours",
        "ex_kernel_title": "2. The kernel (filter)",
        "ex_kernel_text": "A 3x3 kernel slides over each channel, one pixel at a time (stride 1, "
                          "no padding). This example kernel from the paper responds where the "
                          "brightness changes from left to right: an upright edge.",
        "ex_conv_title": "3. Convolution, per channel",
        "ex_conv_text": "Each number is the sum of the 3x3 window times the kernel, cell by "
                        "cell. A 4x4 patch gives 2x2 numbers.",
        "ex_sum_title": "4. Sum of the three channels",
        "ex_relu_title": "5. ReLU: negative numbers become 0",
        "ex_flatten_title": "6. Flatten: the table becomes one row",
        "ex_model_intro": "Steps 1–6 used the paper's example kernel on one patch. The real "
                          "model ({backbone}) does the same with kernels it learned, over the "
                          "whole {size}x{size} photo, in many layers.",
        "ex_layer_title": "7. The model's first convolution layer",
        "ex_layer_text": "It has {n} filters; each one turns your photo into a map of {h}x{w} "
                         "values (stride {stride}). Light areas are where that filter responds "
                         "strongly.",
        "ex_layer_paper": "The paper's example mentions {paper} filters; this model's first "
                          "layer has {n}.",
        "ex_grid_alt": "{n} grey feature maps, one for each filter of the first layer",
        "ex_heatmap_title": "8. Where the model looked",
        "ex_softmax_title": "9. From scores to probabilities (softmax)",
        "ex_softmax_text": "The last layer gives one score z (a logit) per condition. kulit "
                           "divides each by the temperature T = {temp}, fitted on validation "
                           "photos so that the percentages are honest, then p = exp(z/T) "
                           "divided by the sum of all exp(z/T).",
        "ex_shift_note": "Every z/T was first lowered by the largest one ({shift}); this gives "
                         "the same p and keeps exp from overflowing.",
        "ex_col_condition": "Condition",
        "ex_col_sum": "Sum",
        "ex_answer_title": "10. The answer",
        "ex_threshold": "When the top condition is below {pct}, kulit says it is not sure.",
        "ex_check": "These are the same numbers as on the result page (largest difference "
                    "{diff}).",
        "ex_timing": "Computed in {ms} ms.",
    },
}

# Metrics shown on /about, in this order; the rest of card.metrics stays in /api/v1/model.
METRICS = ("n", "accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy", "ece")
PERCENT_METRICS = frozenset({"accuracy", "balanced_accuracy", "top3_accuracy"})


def normalize_lang(value: str | None) -> str | None:
    """'en', 'EN', 'en-US' -> 'en'; anything unsupported -> None."""
    if not value:
        return None
    code = value.strip().lower().split("-")[0].split("_")[0]
    return code if code in LANGS else None


def t(lang: str, key: str, **kw: Any) -> str:
    """The UI string `key` in `lang`, formatted with kw; falls back to English, then the key."""
    table = STRINGS.get(lang, STRINGS["en"])
    text = table[key] if key in table else STRINGS["en"].get(key, key)
    return text.format(**kw) if kw else text


def fmt_pct(p: float) -> str:
    """A probability as a whole percent; tiny non-zero values read '<1%' rather than '0%'."""
    if 0 < p < 0.005:
        return "<1%"
    return f"{round(100 * p)}%"


def fmt_num(x: float, lang: str, digits: int = 3) -> str:
    """A decimal with the language's separator (Indonesian writes 0,05)."""
    s = f"{x:.{digits}f}"
    return s.replace(".", ",") if lang == "id" else s


@lru_cache(maxsize=1)
def load_conditions() -> dict[str, dict[str, dict[str, Any]]]:
    """The lay texts per class and language from conditions.json (read once)."""
    data = json.loads(CONDITIONS_FILE.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def condition_info(cls: str, lang: str) -> dict[str, Any]:
    """Name and texts of a class for lay readers; an unknown class gets its raw name only."""
    entry = load_conditions().get(cls)
    if entry is None:
        return {"name": cls, "known": False}
    text = entry.get(lang) or entry.get("en") or {}
    return {"name": text.get("name", cls), "known": True, **text}


def condition_name(cls: str, lang: str) -> str:
    return str(condition_info(cls, lang)["name"])
