//! Charts as PNG: the report's SVG charts rasterised with resvg, their text
//! set in the machine's fonts (loaded once).

use crate::{Error, Result};

/// SVG charts to PNG, text in the machine's fonts.
pub struct Rasteriser {
    options: resvg::usvg::Options<'static>,
}

impl Rasteriser {
    /// Loads the system fonts; without any, charts are drawn without text
    /// (with a warning: the SVG and HTML keep it).
    pub fn new() -> Self {
        let mut options = resvg::usvg::Options::default();
        let db = options.fontdb_mut();
        db.load_system_fonts();
        if db.is_empty() {
            tracing::warn!("no system fonts found: PNG charts are drawn without their text (the SVG and HTML have it)");
        }
        // `sans-serif` resolves to Arial unless told otherwise: take the
        // first sans-serif family this machine has.
        let has = |name: &str| db.faces().any(|f| f.families.iter().any(|(n, _)| n == name));
        if let Some(name) =
            ["Arial", "Helvetica", "DejaVu Sans", "Liberation Sans", "Noto Sans"].into_iter().find(|n| has(n))
        {
            db.set_sans_serif_family(name);
        }
        Self { options }
    }

    /// The chart at twice its size, as PNG.
    pub fn png(&self, svg: &str) -> Result<Vec<u8>> {
        use resvg::tiny_skia::{Pixmap, Transform};
        let tree = resvg::usvg::Tree::from_str(svg, &self.options)
            .map_err(|e| Error::Render(format!("reading the chart's SVG: {e}")))?;
        let size = tree.size().to_int_size();
        let mut pixmap =
            Pixmap::new(size.width() * 2, size.height() * 2).ok_or_else(|| Error::Render("an empty chart".into()))?;
        pixmap.fill(resvg::tiny_skia::Color::WHITE);
        resvg::render(&tree, Transform::from_scale(2.0, 2.0), &mut pixmap.as_mut());
        pixmap.encode_png().map_err(|e| Error::Render(format!("encoding PNG: {e}")))
    }
}

impl Default for Rasteriser {
    fn default() -> Self {
        Self::new()
    }
}
