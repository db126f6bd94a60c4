import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// The inline SVGs of an HTML report, each parsed as XML on its own.
public enum SVGInspection {
    public struct Parsed {
        public var id: String
        /// Elements by their `class` attribute.
        public var classCounts: [String: Int]
        public var elementCount: Int
    }

    private final class Collector: NSObject, XMLParserDelegate {
        var id = ""
        var classCounts: [String: Int] = [:]
        var elements = 0
        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            elements += 1
            if elementName == "svg", elements == 1 { id = attributes["id"] ?? "" }
            if let name = attributes["class"] { classCounts[name, default: 0] += 1 }
        }
    }

    /// Every `<svg …>…</svg>` of `html`, in order; throws naming the SVG and the parser's error when one is
    /// not well-formed XML.
    public static func svgs(in html: String) throws -> [Parsed] {
        var result: [Parsed] = []
        var rest = html[...]
        while let open = rest.range(of: "<svg"), let close = rest.range(of: "</svg>", range: open.upperBound..<rest.endIndex) {
            let text = String(rest[open.lowerBound..<close.upperBound])
            let parser = XMLParser(data: Data(text.utf8))
            let collector = Collector()
            parser.delegate = collector
            guard parser.parse() else {
                throw NSError(domain: "SVGInspection", code: 1, userInfo: [NSLocalizedDescriptionKey:
                    "SVG \(result.count) is not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "?") at line \(parser.lineNumber), column \(parser.columnNumber): \(text.prefix(300))"])
            }
            result.append(Parsed(id: collector.id, classCounts: collector.classCounts, elementCount: collector.elements))
            rest = rest[close.upperBound...]
        }
        return result
    }
}
