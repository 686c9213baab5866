"""The built-in modality codecs (text, image, audio) as thin registry adapters over `uti.text`,
`uti.image.codec` and `uti.audio.codec`. Each file registers one codec; models load on first use."""
