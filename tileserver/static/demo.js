/* tileserver demo page: shows every layer x tile matrix set of the server's
 * WMTS capabilities with OpenLayers (vendored full build, global `ol`).
 *
 * The layer shown is taken from the URL hash:
 *   #layer=osm_lv95                      first matrix set of layer osm_lv95
 *   #layer=osm_lv95&matrixset=epsg2056   that layer on that matrix set
 *   #osm_lv95                            short form of #layer=osm_lv95
 *   #layer=osm&protocol=compare          WMTS, OGC API - Tiles and XYZ side by side
 * Without a (matching) hash the first layer x matrix set is shown. Choosing in
 * the <select> rewrites the hash, and editing the hash switches the layer.
 *
 * Served by tileserver, the page can show the same layer through WMTS, OGC API -
 * Tiles (ol.source.OGCMapTile, from the tileset metadata) or XYZ (ol.source.TileJSON,
 * Web Mercator quadtree grids only), or the three side by side on one shared view.
 * A tile store's copy (generate_controller --openlayers-test) shows WMTS only.
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

  // false in a tile store's copy (generate_controller --openlayers-test): WMTS only.
  var SERVER_APIS = true;
  var PROTOCOLS = {
    wmts: 'WMTS',
    ogcapi: 'OGC API – Tiles',
    xyz: 'XYZ (TileJSON)',
  };
  var protocolBox = document.getElementById('protocol-box');
  var protocolSelect = document.getElementById('protocol-select');
  var mapsEl = document.getElementById('maps');
  protocolBox.hidden = !SERVER_APIS;

  var maps = []; // the ol.Map objects shown
  var protocol = 'wmts'; // wmts | ogcapi | xyz | compare
  var shownProtocol = null;

  var caps = null;
  var choices = []; // [{layer, matrixSet, title, crs}]
  var current = null; // the choice shown
  var tileStats = { loaded: 0, failed: 0, errors: [] };

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
      var wanted = params.get('protocol');
      protocol = SERVER_APIS && wanted && (PROTOCOLS[wanted] || wanted === 'compare')
        ? wanted : 'wmts';
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
      '&matrixset=' + encodeURIComponent(c.matrixSet) +
      (protocol !== 'wmts' ? '&protocol=' + protocol : '');
    if (location.hash !== hash) history.replaceState(null, '', hash);
  }

  function layerCapabilities(id) {
    return asArray(caps.Contents.Layer).filter(function (l) {
      return l.Identifier === id;
    })[0];
  }

  function newMap(target) {
    return new ol.Map({
      target: target,
      controls: ol.control.defaults
        .defaults({ attribution: true })
        .extend([new ol.control.ScaleLine()]),
    });
  }

  /** One map element per protocol shown, each with its caption in compare mode. */
  function layoutMaps(protocols) {
    maps.forEach(function (m) {
      m.setTarget(null);
    });
    mapsEl.textContent = '';
    maps = protocols.map(function (p) {
      var el = document.createElement('div');
      el.className = 'map';
      el.dataset.protocol = p;
      if (protocols.length > 1) {
        var caption = document.createElement('div');
        caption.className = 'map-caption';
        caption.textContent = PROTOCOLS[p];
        el.appendChild(caption);
      }
      mapsEl.appendChild(el);
      return newMap(el);
    });
  }

  /** The WMTS source of a choice, from the Capabilities (REST). */
  function wmtsSource(c, projection) {
    var options = ol.source.WMTS.optionsFromCapabilities(caps, {
      layer: c.layer,
      matrixSet: c.matrixSet,
      projection: projection,
      requestEncoding: 'REST',
    });
    if (!options) {
      throw new Error('Layer ' + c.layer + ' / ' + c.matrixSet +
        ' could not be read from the capabilities.');
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
      throw new Error('Layer ' + c.layer + ' has no REST tile ResourceURL.');
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
    source.set('template', options.urls[0]);
    return source;
  }

  function fetchJson(url) {
    return fetch(url, { headers: { Accept: 'application/json' } }).then(function (r) {
      if (!r.ok) {
        return r.json().then(
          function (problem) {
            throw new Error(url + ': ' + (problem.detail || r.status));
          },
          function () {
            throw new Error(url + ': HTTP ' + r.status);
          }
        );
      }
      return r.json();
    });
  }

  /** The OGC API - Tiles source of a choice: the collection's tileset in the
   *  choice's CRS, read by ol.source.OGCMapTile. */
  function ogcApiSource(c, projection) {
    var list = 'ogcapi/collections/' + encodeURIComponent(c.layer) + '/map/tiles';
    return fetchJson(list).then(function (tilesets) {
      var tileset = tilesets.tilesets.filter(function (t) {
        return normaliseCrs(t.crs) === c.crs;
      })[0];
      if (!tileset) throw new Error(list + ' has no tileset in ' + c.crs);
      var self = tileset.links.filter(function (l) {
        return l.rel === 'self';
      })[0];
      var source = new ol.source.OGCMapTile({
        url: self.href,
        projection: projection,
        attributions: ATTRIBUTION,
        transition: 0,
      });
      source.set('template', self.href + '/{tileMatrix}/{tileRow}/{tileCol}');
      return source;
    });
  }

  /** The XYZ source of a choice from its TileJSON: Web Mercator quadtrees only. */
  function xyzSource(c) {
    if (c.crs !== 'EPSG:3857') {
      return Promise.reject(new Error('XYZ and TileJSON need the Web Mercator quadtree: ' +
        c.matrixSet + ' is in ' + c.crs + '.'));
    }
    var url = 'xyz/' + encodeURIComponent(c.layer) + '/' +
      encodeURIComponent(c.matrixSet) + '/tilejson.json';
    return fetchJson(url).then(function (tilejson) {
      var source = new ol.source.TileJSON({
        tileJSON: tilejson,
        attributions: ATTRIBUTION,
        transition: 0,
      });
      source.set('template', tilejson.tiles[0]);
      // OpenLayers' TileJSON source asks for every tile in view: only those of the
      // layer's bounds exist (the others are 404, outside the layer's limits).
      source.set('extent', ol.proj.transformExtent(tilejson.bounds, 'EPSG:4326', 'EPSG:3857'));
      return source;
    });
  }

  function sourceFor(p, c, projection) {
    if (p === 'ogcapi') return ogcApiSource(c, projection);
    if (p === 'xyz') return xyzSource(c);
    try {
      return Promise.resolve(wmtsSource(c, projection));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  function show(c) {
    current = c;
    shownProtocol = protocol;
    select.value = String(choices.indexOf(c));
    protocolSelect.value = protocol;
    writeHash(c);
    layerTitleEl.textContent = c.title;
    crsEl.textContent = c.crs || '–';
    tileUrlEl.textContent = '–';

    var projection = c.crs ? ol.proj.get(c.crs) : null;
    if (!projection) {
      layoutMaps(['wmts']);
      setStatus('CRS ' + (c.crs || '(none)') + ' of matrix set ' + c.matrixSet +
        ' is not known to this page.', true);
      return;
    }
    var protocols = protocol === 'compare' ? ['wmts', 'ogcapi', 'xyz'] : [protocol];
    layoutMaps(protocols);

    // One view for every map: they pan and zoom together. Its resolutions are
    // the WMTS matrix set's, read from the Capabilities.
    var tileGrid;
    try {
      tileGrid = wmtsSource(c, projection).getTileGrid();
    } catch (e) {
      setStatus(e.message, true);
      return;
    }
    var view = new ol.View({
      projection: projection,
      resolutions: tileGrid.getResolutions(),
      constrainResolution: true,
    });
    var l = layerCapabilities(c.layer);
    var extent = null;
    if (l.WGS84BoundingBox) {
      extent = ol.proj.transformExtent(l.WGS84BoundingBox, 'EPSG:4326', projection, 8);
    }
    if (!extent || !extent.every(isFinite) || ol.extent.isEmpty(extent)) {
      extent = tileGrid.getExtent();
    }
    maps.forEach(function (m) {
      m.setView(view);
    });
    view.fit(extent, { size: maps[0].getSize() });

    layerTitleEl.textContent = c.title + (c.title !== c.layer ? ' (' + c.layer + ')' : '');
    crsEl.textContent = c.crs + (projection.getUnits() ? ' (' + projection.getUnits() + ')' : '');
    document.title = 'tileserver demo – ' + c.layer + ' / ' + c.matrixSet;
    setStatus('');

    var stats = (tileStats = { loaded: 0, failed: 0, errors: [] });
    var shown = c;
    protocols.forEach(function (p, i) {
      sourceFor(p, c, projection).then(
        function (source) {
          if (current !== shown) return;
          // Counted per protocol on the map's element too (data-loaded, data-failed,
          // data-complete): what the page did, for the tests and the browser's inspector.
          var el = maps[i].getTargetElement();
          el.dataset.loaded = el.dataset.failed = '0';
          source.on('tileloadend', function () {
            stats.loaded++;
            el.dataset.loaded = String(Number(el.dataset.loaded) + 1);
            if (stats === tileStats) updateTileStatus();
          });
          source.on('tileloaderror', function () {
            stats.failed++;
            el.dataset.failed = String(Number(el.dataset.failed) + 1);
            if (stats === tileStats) updateTileStatus();
          });
          maps[i].addLayer(new ol.layer.Tile({ source: source, extent: source.get('extent') }));
          // Once the tiles in view are loaded and drawn (data-complete); an OGC API
          // source first reads its tileset and tile matrix set.
          var whenDrawn = function () {
            maps[i].once('rendercomplete', function () {
              el.dataset.complete = 'true';
            });
            maps[i].render();
          };
          if (source.getState() === 'ready') {
            whenDrawn();
          } else {
            source.on('change', function ready() {
              if (source.getState() !== 'ready') return;
              source.un('change', ready);
              whenDrawn();
            });
          }
          if (protocols.length === 1) tileUrlEl.textContent = source.get('template');
        },
        function (err) {
          if (current !== shown) return;
          maps[i].getTargetElement().dataset.error = err.message;
          stats.errors.push(PROTOCOLS[p] + ': ' + err.message);
          updateTileStatus();
        }
      );
    });
  }

  function updateTileStatus() {
    var parts = tileStats.errors.slice();
    if (tileStats.failed) {
      parts.push('Tiles: ' + tileStats.loaded + ' loaded, ' + tileStats.failed + ' failed.');
    }
    if (parts.length) setStatus(parts.join(' '), true);
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
    if (c !== current || protocol !== shownProtocol) show(c);
  }

  protocolSelect.addEventListener('change', function () {
    protocol = protocolSelect.value;
    if (current) show(current);
  });

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
