/* tileserver demo page: shows every layer x tile matrix set of the server's
 * WMTS capabilities with OpenLayers (vendored full build, global `ol`).
 *
 * The layer shown is taken from the URL hash:
 *   #layer=osm_lv95                      first matrix set of layer osm_lv95
 *   #layer=osm_lv95&matrixset=epsg2056   that layer on that matrix set
 *   #osm_lv95                            short form of #layer=osm_lv95
 * Without a (matching) hash the first layer x matrix set is shown. Choosing in
 * the <select> rewrites the hash, and editing the hash switches the layer.
 */
(function () {
  'use strict';

  // Relative on purpose: works with the page at "/" or behind a prefix.
  var CAPABILITIES_URL = 'wmts/1.0.0/WMTSCapabilities.xml';
  var ATTRIBUTION =
    '© <a href="https://www.openstreetmap.org/copyright" target="_blank" ' +
    'rel="noopener">OpenStreetMap</a> contributors';

  // Projections beyond OpenLayers' built-in EPSG:3857 / EPSG:4326.
  proj4.defs(
    'EPSG:2056',
    '+proj=somerc +lat_0=46.9524055555556 +lon_0=7.43958333333333 +k_0=1 ' +
      '+x_0=2600000 +y_0=1200000 +ellps=bessel ' +
      '+towgs84=674.374,15.056,405.346,0,0,0,0 +units=m +no_defs +type=crs'
  );
  // In the full build the ol/proj/proj4 module is ol.proj.proj4.
  ol.proj.proj4.register(proj4);

  var select = document.getElementById('layer-select');
  var layerTitleEl = document.getElementById('layer-title');
  var crsEl = document.getElementById('crs');
  var tileUrlEl = document.getElementById('tile-url');
  var statusEl = document.getElementById('status');
  var capsLink = document.getElementById('caps-link');

  var capsAbsUrl = new URL(CAPABILITIES_URL, document.baseURI).href;
  capsLink.href = capsAbsUrl;

  var map = new ol.Map({
    target: 'map',
    controls: ol.control.defaults
      .defaults({ attribution: true })
      .extend([new ol.control.ScaleLine()]),
    view: new ol.View({ center: [0, 0], zoom: 1 }),
  });

  var caps = null;
  var choices = []; // [{layer, matrixSet, title, crs}]
  var current = null; // the choice shown
  var tileStats = { loaded: 0, failed: 0 };

  function setStatus(text, isError) {
    statusEl.textContent = text || '';
    statusEl.classList.toggle('error', !!isError);
  }

  function asArray(v) {
    return v == null ? [] : Array.isArray(v) ? v : [v];
  }

  /** "urn:ogc:def:crs:EPSG::2056", "http://www.opengis.net/def/crs/EPSG/0/2056",
   *  "EPSG:2056" -> "EPSG:2056"; anything else is returned unchanged. */
  function normaliseCrs(crs) {
    if (!crs) return crs;
    var m =
      /^urn:(?:x-)?ogc:def:crs:EPSG:[^:]*:(\d+)$/i.exec(crs) ||
      /^https?:\/\/www\.opengis\.net\/def\/crs\/EPSG\/[^/]+\/(\d+)$/i.exec(crs) ||
      /^EPSG:(\d+)$/i.exec(crs);
    if (m) return 'EPSG:' + m[1];
    if (/CRS:?84$/i.test(crs)) return 'EPSG:4326';
    return crs;
  }

  /** Resolve a ResourceURL template against the capabilities document's URL,
   *  keeping the {placeholders} intact. */
  function absoluteTemplate(template) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(template)) return template;
    return new URL(template, capsAbsUrl).href
      .replace(/%7B/gi, '{')
      .replace(/%7D/gi, '}');
  }

  function safeDecode(s) {
    try {
      return decodeURIComponent(s);
    } catch (e) {
      return s;
    }
  }

  function buildChoices() {
    var contents = caps.Contents || {};
    var sets = {};
    asArray(contents.TileMatrixSet).forEach(function (s) {
      sets[s.Identifier] = s;
    });
    var out = [];
    asArray(contents.Layer).forEach(function (l) {
      asArray(l.TileMatrixSetLink).forEach(function (link) {
        var set = sets[link.TileMatrixSet];
        out.push({
          layer: l.Identifier,
          matrixSet: link.TileMatrixSet,
          title: l.Title || l.Identifier,
          crs: normaliseCrs(set && set.SupportedCRS),
        });
      });
    });
    return out;
  }

  function fillSelect() {
    select.textContent = '';
    choices.forEach(function (c, i) {
      var opt = document.createElement('option');
      opt.value = String(i);
      opt.textContent = c.layer + ' · ' + c.matrixSet + (c.crs ? ' (' + c.crs + ')' : '');
      opt.title = c.title;
      select.appendChild(opt);
    });
    select.disabled = choices.length === 0;
  }

  /** The choice named by the URL hash, or null. */
  function choiceFromHash() {
    var hash = location.hash.replace(/^#/, '');
    if (!hash) return null;
    var layer, matrixSet;
    if (hash.indexOf('=') < 0) {
      layer = safeDecode(hash);
    } else {
      var params = new URLSearchParams(hash);
      layer = params.get('layer');
      matrixSet =
        params.get('matrixset') ||
        params.get('matrixSet') ||
        params.get('tilematrixset') ||
        params.get('TileMatrixSet');
    }
    var found = choices.filter(function (c) {
      return (!layer || c.layer === layer) && (!matrixSet || c.matrixSet === matrixSet);
    });
    return found.length ? found[0] : null;
  }

  function writeHash(c) {
    var hash =
      '#layer=' + encodeURIComponent(c.layer) +
      '&matrixset=' + encodeURIComponent(c.matrixSet);
    if (location.hash !== hash) history.replaceState(null, '', hash);
  }

  function layerCapabilities(id) {
    return asArray(caps.Contents.Layer).filter(function (l) {
      return l.Identifier === id;
    })[0];
  }

  function show(c) {
    current = c;
    select.value = String(choices.indexOf(c));
    writeHash(c);
    map.getLayers().clear();
    layerTitleEl.textContent = c.title;
    crsEl.textContent = c.crs || '–';
    tileUrlEl.textContent = '–';

    var projection = c.crs ? ol.proj.get(c.crs) : null;
    if (!projection) {
      setStatus('CRS ' + (c.crs || '(none)') + ' of matrix set ' + c.matrixSet +
        ' is not known to this page.', true);
      return;
    }

    var options = ol.source.WMTS.optionsFromCapabilities(caps, {
      layer: c.layer,
      matrixSet: c.matrixSet,
      projection: projection,
      requestEncoding: 'REST',
    });
    if (!options) {
      setStatus('Layer ' + c.layer + ' / ' + c.matrixSet +
        ' could not be read from the capabilities.', true);
      return;
    }

    // optionsFromCapabilities takes every tile ResourceURL of the layer; keep
    // only the one of the first tile format so that tiles are not mixed.
    var l = layerCapabilities(c.layer);
    var resource = asArray(l.ResourceURL).filter(function (r) {
      return r.resourceType === 'tile';
    })[0];
    if (resource) {
      options.urls = [resource.template];
      options.format = resource.format;
    }
    if (!options.urls || !options.urls.length) {
      setStatus('Layer ' + c.layer + ' has no REST tile ResourceURL.', true);
      return;
    }
    options.urls = options.urls.map(absoluteTemplate);
    options.attributions = ATTRIBUTION;
    options.attributionsCollapsible = false;
    // No tile fade-in. OpenLayers' default 250 ms fade draws a freshly loaded
    // tile at opacity 0 and raises it frame by frame, by the clock. Headless
    // screenshots (chromium --virtual-time-budget) freeze that clock once the
    // budget is spent, so every tile stayed invisible: grey map, 200 tiles.
    options.transition = 0;

    var source = new ol.source.WMTS(options);
    var stats = (tileStats = { loaded: 0, failed: 0 });
    source.on('tileloadend', function () {
      stats.loaded++;
      if (stats === tileStats) updateTileStatus();
    });
    source.on('tileloaderror', function () {
      stats.failed++;
      if (stats === tileStats) updateTileStatus();
    });

    var tileGrid = source.getTileGrid();
    var view = new ol.View({
      projection: projection,
      resolutions: tileGrid.getResolutions(),
      constrainResolution: true,
    });

    map.addLayer(new ol.layer.Tile({ source: source }));
    map.setView(view);

    // Zoom to the layer's WGS84BoundingBox in the matrix set's CRS.
    var extent = null;
    if (l.WGS84BoundingBox) {
      extent = ol.proj.transformExtent(l.WGS84BoundingBox, 'EPSG:4326', projection, 8);
    }
    if (!extent || !extent.every(isFinite) || ol.extent.isEmpty(extent)) {
      extent = tileGrid.getExtent();
    }
    view.fit(extent, { size: map.getSize() });

    layerTitleEl.textContent = c.title + (c.title !== c.layer ? ' (' + c.layer + ')' : '');
    crsEl.textContent = c.crs + (projection.getUnits() ? ' (' + projection.getUnits() + ')' : '');
    tileUrlEl.textContent = options.urls[0];
    document.title = 'tileserver demo – ' + c.layer + ' / ' + c.matrixSet;
    setStatus('');
  }

  function updateTileStatus() {
    if (tileStats.failed) {
      setStatus('Tiles: ' + tileStats.loaded + ' loaded, ' + tileStats.failed + ' failed.', true);
    }
  }

  function showFromHash() {
    if (!choices.length) return;
    var c = choiceFromHash();
    if (!c && location.hash.length > 1) {
      var bad = safeDecode(location.hash);
      if (current) writeHash(current);
      else show(choices[0]);
      setStatus('No layer matches ' + bad + ' — showing ' + current.layer +
        ' / ' + current.matrixSet + '.', true);
      return;
    }
    c = c || choices[0];
    if (c !== current) show(c);
  }

  select.addEventListener('change', function () {
    var c = choices[Number(select.value)];
    if (c) show(c);
  });
  window.addEventListener('hashchange', showFromHash);

  fetch(CAPABILITIES_URL)
    .then(function (response) {
      if (!response.ok) {
        throw new Error('HTTP ' + response.status + ' ' + response.statusText);
      }
      return response.text();
    })
    .then(function (text) {
      caps = new ol.format.WMTSCapabilities().read(text);
      if (!caps || !caps.Contents) {
        throw new Error('not a WMTS capabilities document');
      }
      choices = buildChoices();
      fillSelect();
      if (!choices.length) {
        setStatus('The capabilities list no layers.', true);
        return;
      }
      showFromHash();
    })
    .catch(function (err) {
      select.textContent = '';
      var opt = document.createElement('option');
      opt.textContent = 'no capabilities';
      select.appendChild(opt);
      setStatus('Could not load ' + CAPABILITIES_URL + ': ' + err.message, true);
      console.error('tileserver demo:', err);
    });
})();
