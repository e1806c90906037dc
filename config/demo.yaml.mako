## Demo configuration: Monaco (OpenStreetMap, ODbL) rendered on demand with Mapnik.
## Run it with:  tileserver serve --config config/demo.yaml.mako
## A Mako template (lines starting with ## are Mako comments): ${env.get(...)} reads the
## environment, so the same file serves on a laptop and in docker-compose.
## Vocabulary from TileCloud-chain: grids, caches, layer_default, layers, generation.

grids:
  # Web Mercator, the GoogleMapsCompatible resolutions (zoom 0 to 20).
  epsg3857:
    srs: EPSG:3857
    bbox: [-20037508.342789244, -20037508.342789244, 20037508.342789244, 20037508.342789244]
    tile_size: 256
    resolutions: [156543.03392804097, 78271.51696402048, 39135.75848201024, 19567.87924100512,
                  9783.93962050256, 4891.96981025128, 2445.98490512564, 1222.99245256282,
                  611.49622628141, 305.748113140705, 152.8740565703525, 76.43702828517625,
                  38.21851414258813, 19.109257071294063, 9.554628535647032, 4.777314267823516,
                  2.388657133911758, 1.194328566955879, 0.5971642834779395, 0.29858214173896974,
                  0.14929107086948487]
  # Swiss LV95 with swisstopo's resolutions; the bbox reaches south to Monaco.
  epsg2056:
    srs: EPSG:2056
    bbox: [2420000, 830000, 2900000, 1350000]
    tile_size: 256
    resolutions: [4000, 3750, 3500, 3250, 3000, 2750, 2500, 2250, 2000, 1750, 1500, 1250,
                  1000, 750, 650, 500, 250, 100, 50, 20, 10, 5, 2.5, 2, 1.5, 1, 0.5, 0.25]

caches:
  local:
    type: filesystem
    folder: ${env.get("TILESERVER_TILES", "/var/tmp/tileserver-tiles")}

# Where Memcached is absent, tileserver falls back to an in-process cache by itself.
# MEMCACHED_SERVERS: comma-separated host:port list.
memcached:
  servers: [${", ".join('"%s"' % s.strip() for s in env.get("MEMCACHED_SERVERS", "127.0.0.1:11211").split(","))}]
  prefix: "demo/"

layer_default:
  type: mapnik
  mapfile: styles/osm.xml
  meta: true
  meta_size: 8
  meta_buffer: 32
  extension: png
  mime_type: image/png
  wmts_style: default
  expires: 4   # hours: the Memcached TTL and the HTTP max-age

layers:
  osm:
    title: Monaco (Web Mercator)
    grid: epsg3857
    bbox: [824000, 5421800, 829500, 5428000]
  osm_lv95:
    title: Monaco (Swiss LV95 grid)
    grid: epsg2056
    bbox: [2596500, 840000, 2601500, 845500]

generation:
  default_cache: local
  default_layers: [osm, osm_lv95]

server:
  host: ${env.get("TILESERVER_HOST", "127.0.0.1")}
  port: ${env.get("TILESERVER_PORT", "8080")}

metadata:
  title: tileserver demo
  abstract: OpenStreetMap data of Monaco rendered on demand. © OpenStreetMap contributors (ODbL).
  keywords: [OpenStreetMap, Monaco, WMTS]

provider:
  name: tileserver
  url: https://www.openstreetmap.org/copyright
